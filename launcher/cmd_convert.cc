// pipelm convert: a Hugging Face folder (runtime/hf/hf_folder.h) written as the GGUF that
// llama.cpp's convert_hf_to_gguf.py writes: its model and tokenizer keys in its order (of the
// descriptive general.* keys only general.name), tokenizer arrays, tensor names, order and
// shapes; 1-D tensors F32, 2-D weights in --ftype's type. auto keeps each weight's checkpoint
// dtype (bit copies); f32/f16/bf16/q8_0 are the converter's --outtype; the llama-quantize file
// types (q4_k_m, ...) apply its per-tensor mix (model::ftype_tensor_type), as running
// llama-quantize on the converted file would (no importance matrix). Single-threaded.
#include <cstring>
#include <map>
#include <vector>

#include "kernels/quant.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "runtime/base/error.h"
#include "runtime/base/log.h"
#include "runtime/gguf/gguf_writer.h"
#include "runtime/hf/hf_folder.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/mkmodel.h"
#include "runtime/model/tensors.h"

namespace pipelm::launcher {

int cmd_convert(int argc, char** argv) {
    cli::Args a("convert", {{"--model", "-m", true, "DIR", "Hugging Face folder (or give it as the first argument)", ""},
                            {"--out", "-o", true, "FILE", "output GGUF", ""},
                            {"--ftype", "", true, "TYPE", "auto (the checkpoint's dtype) or " + model::ftype_names(), "auto"}});
    std::string dir;
    int first = 2;
    if (argc > 2 && argv[2][0] != '-') dir = argv[first++];
    if (!a.parse(argc, argv, first,
                 "Writes a Hugging Face Glm4ForCausalLM folder as the GGUF llama.cpp's convert_hf_to_gguf.py writes:\n"
                 "  pipelm convert DIR -o model.gguf [--ftype auto|f32|f16|bf16|q8_0|q4_k_m|...]\n"
                 "1-D tensors are F32; --ftype sets the 2-D weights (the llama-quantize types apply its per-tensor mix)."))
        return 0;
    if (dir.empty()) dir = a.str("--model");
    if (dir.empty() || !a.has("--out"))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "convert: pass DIR -o OUT.gguf (DIR: a Hugging Face folder)");
    const std::string ftype = a.str("--ftype");
    if (ftype != "auto") model::parse_ftype(ftype);  // an unknown name: say so before reading anything
    auto in = hf::open_model(dir);  // a lone .safetensors file: the error points to its folder
    if (!in->source())
        PIPELM_THROW(ErrorCode::kInvalidArgument, "convert: ", dir, " is a GGUF file already; convert reads a Hugging "
                     "Face folder (to change a GGUF's types: pipelm quantize)");
    const model::Glm4Config c = model::Glm4Config::from_gguf(*in);
    // auto: each weight's checkpoint type; otherwise llama-quantize's mix (shared with quantize).
    const std::map<std::string, GgmlType> types =
        ftype == "auto" ? std::map<std::string, GgmlType>() : model::ftype_tensor_types(model::parse_ftype(ftype), c);

    gguf::GgufWriter w(32);
    for (const auto& kv : in->metadata()) {
        if (kv.first == "general.file_type" && ftype != "auto")
            w.set_u32(kv.first, model::ftype_llama_code(model::parse_ftype(ftype)));
        else
            w.set(kv.first, kv.second);
    }
    for (const auto& t : in->tensors()) {
        const GgmlType to = t.ne.size() != 2 ? GgmlType::kF32 : ftype == "auto" ? t.type : types.at(t.name);
        const gguf::TensorInfo* src = &t;
        const gguf::GgufFile* file = in.get();
        w.add_tensor(t.name, to, t.ne, [src, file, to](uint8_t* dst) {
            const uint8_t* data = file->data(*src);
            if (to == src->type) {  // a bit copy
                std::memcpy(dst, data, src->bytes);
                return;
            }
            const int64_t cols = src->ne[0], rows = src->n_elements() / cols;
            const size_t in_rb = ggml_row_bytes(src->type, cols), out_rb = ggml_row_bytes(to, cols);
            std::vector<float> row(static_cast<size_t>(cols));
            for (int64_t r = 0; r < rows; ++r) {
                kernels::dequantize_row(src->type, data + r * in_rb, row.data(), cols);
                model::encode_weight_row(to, row.data(), dst + r * out_rb, cols);
            }
        });
    }
    w.write(a.str("--out"));
    PIPELM_INFO("wrote ", a.str("--out"), " (", in->tensors().size(), " tensors, ftype ", ftype, ") from ", dir);
    return 0;
}

}  // namespace pipelm::launcher
