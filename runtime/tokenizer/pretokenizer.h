// The glm4 (= llama3) pre-tokenizer of llama.cpp, hand-written for speed and for \p{L}/\p{N}:
//   (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// It follows llama.cpp's unicode_regex_split_custom_llama3 match for match, including its
// treatment of the end of the text.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pipelm::tok {

// Splits code points into pre-tokens; returns the length (in code points) of each, in order.
// The lengths add up to cpts.size(); none is zero.
std::vector<size_t> split_glm4(const std::vector<uint32_t>& cpts);

// Convenience: decodes `text` leniently (invalid bytes become U+FFFD, as llama.cpp does) and
// returns the pre-tokens as UTF-8 strings.
std::vector<std::string> pretokenize_glm4(std::string_view text);

}  // namespace pipelm::tok
