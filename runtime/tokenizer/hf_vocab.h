// The tokenizer of a Hugging Face folder (tokenizer.json, tokenizer_config.json) as the
// tokenizer.ggml.* / tokenizer.chat_template keys that llama.cpp's convert_hf_to_gguf.py
// (Glm4Model.set_vocab) writes, so that vocab_from_gguf and `pipelm convert` read one form.
#pragma once
#include <cstdint>
#include <string>

#include "runtime/gguf/gguf_writer.h"

namespace pipelm::tok {

// Reads DIR/tokenizer.json (a byte-level BPE: model.vocab, model.merges, added_tokens) and
// DIR/tokenizer_config.json (pad_token, chat_template; optional) and sets on `w`, in the
// converter's order: tokenizer.ggml.model "gpt2", .pre "glm4", .tokens (n_vocab of them: ids
// absent from the vocabulary become "[PAD<id>]", type unused), .token_type (added special or
// <|...|> tokens control, other added tokens user-defined, the rest normal), .merges ("A B"),
// the special ids GLM-4's converter sets (eos = pad = unk = <|endoftext|>, eot = <|user|>,
// bos = [gMASK]; pad from tokenizer_config.json when it names one) and the chat template.
// Throws Error{kIo} for a missing tokenizer.json, Error{kFormat} naming the file and entry for
// malformed content, Error{kUnsupported} for a tokenizer model other than BPE.
void hf_vocab_to_gguf(const std::string& dir, int64_t n_vocab, gguf::GgufWriter& w);

}  // namespace pipelm::tok
