#include "runtime/tokenizer/gguf_vocab.h"

namespace pipelm::tok {

VocabData vocab_from_gguf(const gguf::GgufFile& f) {
    VocabData v;
    v.model = f.get_string("tokenizer.ggml.model");
    v.pre = f.has("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "";
    v.tokens = f.get_string_array("tokenizer.ggml.tokens");
    if (f.has("tokenizer.ggml.token_type"))
        for (int64_t t : f.get_int_array("tokenizer.ggml.token_type")) v.token_types.push_back(static_cast<int32_t>(t));
    if (f.has("tokenizer.ggml.merges")) v.merges = f.get_string_array("tokenizer.ggml.merges");
    v.bos = static_cast<int32_t>(f.get_int("tokenizer.ggml.bos_token_id", -1));
    v.eos = static_cast<int32_t>(f.get_int("tokenizer.ggml.eos_token_id", -1));
    v.eot = static_cast<int32_t>(f.get_int("tokenizer.ggml.eot_token_id", -1));
    v.unk = static_cast<int32_t>(f.get_int("tokenizer.ggml.unknown_token_id", -1));
    v.pad = static_cast<int32_t>(f.get_int("tokenizer.ggml.padding_token_id", -1));
    if (f.has("tokenizer.chat_template")) v.chat_template = f.get_string("tokenizer.chat_template");
    return v;
}

}  // namespace pipelm::tok
