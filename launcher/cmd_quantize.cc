// pipelm quantize: rewrites a GGUF's 2-D weights in another type (1-D norms and biases stay F32),
// keeping every metadata key. F16/BF16 conversion rounds to nearest even (as ggml); Q8_0 uses the
// same reference rounding as llama-quantize (d = amax/127, q = round(x * (1/d))), so an F32 file
// converted here is tensor-for-tensor identical to llama-quantize's; the other types use
// pipelm's round-to-nearest quantizers (kernels/quant.h).
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/quant.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "runtime/base/fp16.h"
#include "runtime/base/log.h"
#include "runtime/gguf/gguf_writer.h"

namespace pipelm::launcher {
namespace {

void q8_0_like_llama_quantize(const float* x, uint8_t* out, int64_t n) {
    for (int64_t b = 0; b < n / 32; ++b) {
        const float* xb = x + b * 32;
        uint8_t* ob = out + b * 34;
        float amax = 0.f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
        const float d = amax / 127.f;
        const float id = d != 0.f ? 1.0f / d : 0.0f;
        const uint16_t dh = f32_to_fp16(d);
        std::memcpy(ob, &dh, 2);
        for (int j = 0; j < 32; ++j) ob[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(xb[j] * id)));
    }
}

void convert_row(GgmlType to, const float* x, uint8_t* out, int64_t n) {
    switch (to) {
        case GgmlType::kF32: std::memcpy(out, x, n * 4); return;
        case GgmlType::kF16:
            for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(out)[i] = f32_to_fp16(x[i]);
            return;
        case GgmlType::kBF16:
            for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(out)[i] = f32_to_bf16(x[i]);
            return;
        case GgmlType::kQ8_0: q8_0_like_llama_quantize(x, out, n); return;
        default: kernels::quantize_row(to, x, out, n); return;
    }
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
    cli::Args a("quantize", {{"--model", "-m", true, "FILE", "input GGUF", ""},
                             {"--out", "-o", true, "FILE", "output GGUF", ""},
                             {"--type", "", true, "TYPE", "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl q4_k q5_k q6_k iq4_xs", ""}});
    if (!a.parse(argc, argv, 2,
                 "Rewrites every 2-D weight of a GGUF in --type (1-D tensors stay F32). Rows whose length is not a\n"
                 "multiple of the type's block size are refused."))
        return 0;
    if (!a.has("--model") || !a.has("--out") || !a.has("--type"))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "quantize: pass -m IN.gguf -o OUT.gguf --type TYPE");
    const GgmlType to = parse_ggml_type(a.str("--type"));
    auto in = gguf::GgufFile::open(a.str("--model"));
    gguf::GgufWriter w(static_cast<uint32_t>(in->alignment()));
    for (const auto& kv : in->metadata())
        if (kv.first != "general.alignment") w.set(kv.first, kv.second);
    for (const auto& t : in->tensors()) {
        const bool matrix = t.ne.size() == 2 && t.ne[1] > 1;
        const GgmlType tt = matrix ? to : GgmlType::kF32;
        if (t.ne[0] % ggml_type_info(tt).block != 0)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "quantize: tensor '", t.name, "' has rows of ", t.ne[0],
                         " elements, not a multiple of ", ggml_type_name(tt), "'s block of ", ggml_type_info(tt).block);
        const gguf::TensorInfo* src = &t;
        w.add_tensor(t.name, tt, t.ne, [src, tt](uint8_t* dst) {
            const int64_t cols = src->ne[0], rows = src->n_elements() / cols;
            const size_t in_rb = ggml_row_bytes(src->type, cols), out_rb = ggml_row_bytes(tt, cols);
            std::vector<float> row(cols);
            for (int64_t r = 0; r < rows; ++r) {
                kernels::dequantize_row(src->type, src->data + r * in_rb, row.data(), cols);
                convert_row(tt, row.data(), dst + r * out_rb, cols);
            }
        });
    }
    w.write(a.str("--out"));
    PIPELM_INFO("wrote ", a.str("--out"), " (", ggml_type_name(to), ")");
    return 0;
}

}  // namespace pipelm::launcher
