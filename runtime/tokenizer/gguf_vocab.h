// The tokenizer's vocabulary from a GGUF file's tokenizer.ggml.* keys.
#pragma once
#include "runtime/gguf/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

namespace pipelm::tok {

// Throws Error{kFormat} naming the file and key when a required key is missing or mistyped.
VocabData vocab_from_gguf(const gguf::GgufFile& f);

}  // namespace pipelm::tok
