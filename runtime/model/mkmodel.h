// `pipelm mkmodel`: writes a GLM-4-architecture GGUF with random weights of any shape, with a
// byte-level tokenizer (256 byte tokens, unused fillers, the 10 GLM special tokens last), so
// that every command works on its output. For tests and benchmarks; the text it generates is noise.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "runtime/base/ggml_types.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/tensors.h"

namespace pipelm::model {

// llama.cpp's file types as llama-quantize names them ("Q4_K_M"): a base type plus per-tensor
// rules (llama_tensor_get_type in llama.cpp's src/llama-quant.cpp), so that mkmodel writes the
// same mix of types as a file people download. Names are matched case-insensitively.
enum class Ftype { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kIQ4_NL, kIQ4_XS,
                   kQ4_K_S, kQ4_K_M, kQ5_K_S, kQ5_K_M, kQ6_K };

struct MkModelSpec {
    int n_layer = 61, n_embd = 64, n_head = 4, n_head_kv = 2, head_dim = 16, n_rot = 8, n_ff = 128;
    int n_vocab = 666, n_ctx = 4096;
    bool qkv_bias = true;
    GgmlType dtype = GgmlType::kF32;  // 2-D weights; norms and biases stay F32
    std::optional<Ftype> ftype;       // when set, llama-quantize's per-tensor mix replaces dtype
    uint64_t seed = 42;
    float weight_std = 0.02f;
};

// Presets: tiny, glm4-9b, glm4-32b, bench (the llama.cpp comparison shape), demo-like "small".
MkModelSpec mkmodel_preset(const std::string& name);
std::string mkmodel_presets();
void mkmodel_write(const MkModelSpec& spec, const std::string& path, int n_threads);
// The hyperparameters of the file mkmodel_write writes for `spec` (it always writes output.weight),
// and the type it gives a 2-D weight (--dtype's, or --ftype's per-tensor choice; norms and biases
// are F32). `pipelm plan --preset` sizes a model from these without writing it.
Glm4Config mkmodel_config(const MkModelSpec& spec);
GgmlType mkmodel_matrix_type(const MkModelSpec& spec, TensorId id, int64_t ne0, int layer);
// Parameter count of the spec.
uint64_t mkmodel_params(const MkModelSpec& spec);

// One row of n F32 values written as type t (F16/BF16 round to nearest even; other types use
// kernels::quantize_row), as mkmodel and `pipelm convert` store weights.
void encode_weight_row(GgmlType t, const float* src, uint8_t* dst, int64_t n);

// "q4_k_m" -> Ftype::kQ4_K_M; throws kInvalidArgument listing ftype_names() on anything else.
Ftype parse_ftype(const std::string& name);
const char* ftype_name(Ftype f);  // lower case, as parse_ftype takes it
std::string ftype_names();        // "f32, f16, ..." for help texts and errors
GgmlType ftype_base_type(Ftype f);    // q4_k_s/q4_k_m -> q4_K, q5_k_* -> q5_K, q6_k -> q6_K, others their type
uint32_t ftype_llama_code(Ftype f);   // llama.cpp's LLAMA_FTYPE_MOSTLY_* number (general.file_type)
// The type llama-quantize gives the 2-D weight `id` (runtime/model/tensors.h)
// of row length `ne0` in block `layer` (-1 outside the blocks) of a model shaped as `spec`
// (n_layer, n_head / n_head_kv are read), without an importance matrix. Rows that the chosen
// K/IQ4_XS type cannot hold fall back as llama.cpp does (q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0,
// iq4_xs -> iq4_nl, then f16); rows a 32-block base type cannot hold throw kInvalidArgument.
GgmlType ftype_tensor_type(Ftype f, TensorId id, int64_t ne0, int layer, const MkModelSpec& spec);
// ftype_tensor_type of every 2-D weight of a GLM-4 file shaped as `c`, by GGUF tensor name: the
// types `pipelm quantize` and `pipelm convert` write.
std::map<std::string, GgmlType> ftype_tensor_types(Ftype f, const Glm4Config& c);
// general.file_type of a file whose 2-D weights are all of type t (q4_K: Q4_K_M's code, as mkmodel
// --dtype writes it).
uint32_t dtype_llama_code(GgmlType t);

}  // namespace pipelm::model
