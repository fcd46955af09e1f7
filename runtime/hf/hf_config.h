// config.json of a Glm4ForCausalLM checkpoint as the glm4.* GGUF keys llama.cpp's converter
// writes (TextModel + Glm4Model.set_gguf_parameters), in its order.
#pragma once
#include <cstdint>
#include <string>

#include "runtime/gguf/gguf_writer.h"

namespace pipelm::hf {

struct HfConfig {
    int64_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_rot = 0;
    int64_t n_ctx = 0, n_vocab = 0;
    double eps = 0, rope_base = 0;
    bool attention_bias = false;
    bool tie_word_embeddings = false;
};

// Reads DIR/config.json. Throws Error{kIo} if missing, Error{kFormat} naming the key for a
// missing or out-of-range value, Error{kUnsupported} for another architecture or rope scaling.
HfConfig read_hf_config(const std::string& dir);

// Sets general.architecture .. glm4.attention.value_length, general.file_type (`file_type`,
// llama.cpp's LLAMA_FTYPE number) and glm4.rope.dimension_count on `w`, in the converter's order.
void hf_config_to_gguf(const HfConfig& c, const std::string& name, uint32_t file_type, gguf::GgufWriter& w);

}  // namespace pipelm::hf
