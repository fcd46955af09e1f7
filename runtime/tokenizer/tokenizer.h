// GLM-4 tokenizer: GPT-2 style byte-level BPE with the glm4 pre-tokenizer, special-token
// parsing, streaming detokenization and the GLM-4-0414 chat template. Token ids are exactly
// those of llama.cpp's llama_tokenize (add_special = false) on the same GGUF vocabulary.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pipelm::tok {

// Token types of tokenizer.ggml.token_type (llama.cpp's llama_token_type).
enum TokenType : int32_t {
    kTokenUndefined = 0,
    kTokenNormal = 1,
    kTokenUnknown = 2,
    kTokenControl = 3,
    kTokenUserDefined = 4,
    kTokenUnused = 5,
    kTokenByte = 6,
};

struct VocabData {                    // what a GGUF file holds (tokenizer.ggml.* keys)
    std::string model;                // tokenizer.ggml.model, must be "gpt2"
    std::string pre;                  // tokenizer.ggml.pre: "glm4", "chatglm-bpe", "" (= glm4); others
                                      // are accepted and use the same pre-tokenizer
    std::vector<std::string> tokens;  // tokenizer.ggml.tokens
    std::vector<int32_t> token_types; // tokenizer.ggml.token_type (empty -> all normal)
    std::vector<std::string> merges;  // tokenizer.ggml.merges, "A B" strings, rank = index
    int32_t bos = -1, eos = -1, eot = -1, unk = -1, pad = -1;  // -1 = absent
    std::string chat_template;        // tokenizer.chat_template, may be empty
};

class Tokenizer {
public:
    // Validates the vocabulary (model type, token types, special ids in range, every merge
    // "A B" with A, B and AB in the vocabulary); throws pipelm::Error{kFormat} naming the
    // offending key/entry and what to do about it.
    explicit Tokenizer(VocabData v);

    // Text -> ids. Never adds BOS. With parse_special, control (type 3) and unknown (type 2)
    // token strings in the text become their ids; user-defined tokens (type 4) are always
    // matched, as llama.cpp and HF tokenizers do. Invalid UTF-8 bytes are tokenized as U+FFFD.
    std::vector<int32_t> encode(std::string_view text, bool parse_special) const;

    // Bytes of one token: normal and byte tokens are byte-level decoded; control, unknown and
    // user-defined tokens give their text; unused tokens give "". Throws kInvalidArgument for an
    // id out of range.
    std::string token_to_piece(int32_t id) const;
    // Concatenation of token_to_piece (no space clean-up), so decode(encode(s, false)) == s for
    // valid UTF-8 s.
    std::string decode(const std::vector<int32_t>& ids) const;

    int32_t n_vocab() const;
    // End of generation: <|endoftext|>, <|user|>, <|observation|> (by text) plus the eos and eot ids.
    bool is_eog(int32_t id) const;
    std::vector<int32_t> eog_ids() const;  // ascending
    // Id of the token whose vocabulary text (as stored, byte-level encoded for normal tokens,
    // e.g. "Ġthe") is `text`; -1 if absent.
    int32_t find_token(std::string_view text) const;
    const VocabData& vocab() const;

private:
    struct Impl;
    std::shared_ptr<const Impl> impl_;
};

// Streaming detokenizer: holds back an incomplete UTF-8 sequence until it completes. Invalid
// sequences are replaced by U+FFFD as soon as they are known to be invalid.
class StreamDecoder {
public:
    explicit StreamDecoder(const Tokenizer& t);
    std::string push(int32_t id);  // the complete UTF-8 text now printable
    std::string finish();          // whatever is left (invalid bytes replaced by U+FFFD); resets

private:
    const Tokenizer* tok_;
    std::string pending_;
};

struct ChatMessage {
    std::string role;  // "system", "user", "assistant" or "observation"
    std::string content;
};

// GLM-4-0414 format: "[gMASK]<sop>", then "<|system|>\n{content}" for every system message,
// then for the other messages in order "<|user|>\n{content}" / "<|assistant|>\n{content}" /
// "<|observation|>\n{content}", then "<|assistant|>" if add_generation_prompt (no trailing
// newline, as the official Jinja template). Throws kInvalidArgument for any other role.
std::string apply_chat_template(const std::vector<ChatMessage>& msgs, bool add_generation_prompt);

}  // namespace pipelm::tok
