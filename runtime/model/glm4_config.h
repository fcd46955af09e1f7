// GLM-4 hyperparameters from the `glm4.*` GGUF keys and the tensor-shape checks that go with them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/gguf/gguf.h"
#include "runtime/model/arch.h"

namespace pipelm::model {

struct Glm4Config {
    std::string arch = "glm4";
    int n_layer = 0;
    int n_embd = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int n_rot = 0;
    int n_ff = 0;
    int n_vocab = 0;
    int n_ctx_train = 0;
    float eps = 1e-5f;
    float rope_base = 10000.f;
    bool qkv_bias = false;
    bool tied_output = false;  // no output.weight: lm_head reuses token_embd

    int q_dim() const { return n_head * head_dim; }
    int kv_dim() const { return n_head_kv * head_dim; }

    // Reads and validates the hyperparameters; checks every tensor's presence and shape.
    static Glm4Config from_gguf(const gguf::GgufFile& f);
    std::string summary() const;
};

}  // namespace pipelm::model
