// `pipelm mkmodel`: writes a GLM-4-architecture GGUF with random weights of any shape, with a
// byte-level tokenizer (256 byte tokens, unused fillers, the 10 GLM special tokens last), so
// that every command works on its output. For tests and benchmarks; the text it generates is noise.
#pragma once
#include <cstdint>
#include <string>

#include "runtime/base/ggml_types.h"

namespace pipelm::model {

struct MkModelSpec {
    int n_layer = 61, n_embd = 64, n_head = 4, n_head_kv = 2, head_dim = 16, n_rot = 8, n_ff = 128;
    int n_vocab = 666, n_ctx = 4096;
    bool qkv_bias = true;
    GgmlType dtype = GgmlType::kF32;  // 2-D weights; norms and biases stay F32
    uint64_t seed = 42;
    float weight_std = 0.02f;
};

// Presets: tiny, glm4-9b, glm4-32b, bench (the llama.cpp comparison shape), demo-like "small".
MkModelSpec mkmodel_preset(const std::string& name);
std::string mkmodel_presets();
void mkmodel_write(const MkModelSpec& spec, const std::string& path, int n_threads);
// Parameter count of the spec.
uint64_t mkmodel_params(const MkModelSpec& spec);

}  // namespace pipelm::model
