// pipelm quantize: rewrites a GGUF's 2-D weights in another type (1-D norms and biases stay F32),
// keeping every metadata key but general.file_type (llama.cpp's code for TYPE, as llama-quantize
// writes it) and general.quantization_version (2). Takes llama-quantize's command line,
// `pipelm quantize IN OUT TYPE`, or -m IN -o OUT --type TYPE. TYPE is a llama-quantize file type
// (q4_k_m, Q8_0, IQ4_XS, ...: model::ftype_tensor_types, the per-tensor mix mkmodel --ftype and
// convert --ftype write; --pure: every 2-D weight in the file type's base type, as llama-quantize
// --pure) or a ggml type that is not one (q4_k, q5_k: every 2-D weight in that type; llama-quantize
// reads Q4_K and Q5_K as Q4_K_M and Q5_K_M). F16/BF16 conversion rounds to nearest even (as
// ggml); Q8_0 uses the same reference rounding as llama-quantize (d = amax/127, q = round(x *
// (1/d))), so an F32 file converted here is tensor-for-tensor identical to llama-quantize's; the
// other types use pipelm's round-to-nearest quantizers (kernels/quant.h).
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "kernels/quant.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "runtime/base/fp16.h"
#include "runtime/base/log.h"
#include "runtime/gguf/gguf_writer.h"
#include "runtime/hf/hf_folder.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/mkmodel.h"

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

// TYPE: a llama-quantize file type (its mix) or, failing that, a ggml type (one type throughout).
struct Target {
    std::optional<model::Ftype> ftype;
    GgmlType dtype = GgmlType::kF32;  // without ftype
};

const char* kPlainTypes = "q4_k, q5_k";  // ggml types that are not a file type of their own

Target parse_target(const std::string& name) {
    Target t;
    try {
        t.ftype = model::parse_ftype(name);
        return t;
    } catch (const Error&) {
    }
    try {
        t.dtype = parse_ggml_type(name);
        return t;
    } catch (const Error&) {
    }
    std::vector<std::string> names;
    for (std::string all = model::ftype_names() + ", " + kPlainTypes; !all.empty();) {
        const size_t comma = all.find(", ");
        names.push_back(all.substr(0, comma));
        all = comma == std::string::npos ? "" : all.substr(comma + 2);
    }
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::string near = cli::closest(lower, names);
    PIPELM_THROW(ErrorCode::kInvalidArgument, "quantize: unknown type '", name, "'",
                 near.empty() ? std::string() : " (did you mean " + near + "?)", "; see `pipelm quantize --help`");
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
    cli::Args a("quantize",
                {{"--model", "-m", true, "FILE|DIR", "input GGUF or Hugging Face folder (or IN)", ""},
                 {"--out", "-o", true, "FILE", "output GGUF (or OUT)", ""},
                 {"--type", "", true, "TYPE", "file type or ggml type (or TYPE; see above)", ""},
                 {"--pure", "", false, "", "every 2-D weight in the file type's base type (no per-tensor mix)", ""}},
                {{"IN", "--model"}, {"OUT", "--out"}, {"TYPE", "--type"}});
    if (!a.parse(argc, argv, 2,
                 "Rewrites the 2-D weights of a GGUF in TYPE (1-D tensors stay F32), as llama-quantize IN OUT TYPE.\n"
                 "TYPE, case-insensitive:\n"
                 "  llama-quantize's file types, each with its per-tensor mix (q4_k_m: q4_K, q6_K output, q6_K\n"
                 "  attn_v and ffn_down in half the layers; ...), as mkmodel --ftype and convert --ftype write:\n"
                 "    " + model::ftype_names() + "\n"
                 "  " + kPlainTypes + ": every 2-D weight in that type (llama-quantize reads Q4_K/Q5_K as Q4_K_M/Q5_K_M)\n"
                 "Rows a type's blocks cannot hold take llama-quantize's fallback type in a mix and are refused\n"
                 "otherwise. general.file_type is set to llama.cpp's code for TYPE."))
        return 0;
    std::string missing;
    for (const auto& [flag, name] : {std::pair{"--model", "IN"}, {"--out", "OUT"}, {"--type", "TYPE"}})
        if (!a.has(flag)) missing += std::string(missing.empty() ? "" : ", ") + name;
    if (!missing.empty())
        PIPELM_THROW(ErrorCode::kInvalidArgument, "quantize: ", missing, " missing: pass IN.gguf OUT.gguf TYPE (or -m IN.gguf ",
                     "-o OUT.gguf --type TYPE)");
    const Target target = parse_target(a.str("--type"));
    auto in = hf::open_model(a.str("--model"));  // a GGUF or a Hugging Face folder
    // The file type's per-tensor mix, by tensor name (a GLM-4 file); without one (or with --pure)
    // every 2-D weight takes `uniform`.
    std::map<std::string, GgmlType> mix;
    if (target.ftype && !a.flag("--pure")) mix = model::ftype_tensor_types(*target.ftype, model::Glm4Config::from_gguf(*in));
    const GgmlType uniform = target.ftype ? model::ftype_base_type(*target.ftype) : target.dtype;
    const uint32_t file_type = target.ftype ? model::ftype_llama_code(*target.ftype) : model::dtype_llama_code(target.dtype);
    gguf::GgufWriter w(static_cast<uint32_t>(in->alignment()));
    for (const auto& kv : in->metadata())
        if (kv.first != "general.alignment" && kv.first != "general.file_type" && kv.first != "general.quantization_version")
            w.set(kv.first, kv.second);
    w.set_u32("general.quantization_version", 2);
    w.set_u32("general.file_type", file_type);
    std::map<std::string, int> counts;  // "q4_K" -> tensors
    for (const auto& t : in->tensors()) {
        const bool matrix = t.ne.size() == 2 && t.ne[1] > 1;
        auto m = mix.find(t.name);
        const GgmlType tt = !matrix ? GgmlType::kF32 : m != mix.end() ? m->second : uniform;
        ++counts[ggml_type_name(tt)];
        if (t.ne[0] % ggml_type_info(tt).block != 0)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "quantize: tensor '", t.name, "' has rows of ", t.ne[0],
                         " elements, not a multiple of ", ggml_type_name(tt), "'s block of ", ggml_type_info(tt).block);
        const gguf::TensorInfo* src = &t;
        w.add_tensor(t.name, tt, t.ne, [&in, src, tt](uint8_t* dst) {
            const int64_t cols = src->ne[0], rows = src->n_elements() / cols;
            const size_t in_rb = ggml_row_bytes(src->type, cols), out_rb = ggml_row_bytes(tt, cols);
            const uint8_t* data = in->data(*src);  // a folder maps the tensor on first use
            std::vector<float> row(cols);
            for (int64_t r = 0; r < rows; ++r) {
                kernels::dequantize_row(src->type, data + r * in_rb, row.data(), cols);
                convert_row(tt, row.data(), dst + r * out_rb, cols);
            }
        });
    }
    w.write(a.str("--out"));
    std::string summary;
    for (const auto& c : counts) summary += (summary.empty() ? "" : ", ") + std::to_string(c.second) + " " + c.first;
    PIPELM_INFO("wrote ", a.str("--out"), " (", a.str("--type"), a.flag("--pure") ? " --pure" : "", ": ", summary, ")");
    return 0;
}

}  // namespace pipelm::launcher
