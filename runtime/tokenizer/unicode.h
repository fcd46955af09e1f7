// UTF-8 and Unicode helpers for the tokenizer: lenient UTF-8 decoding as llama.cpp does it,
// code point classes (\p{L}, \p{N}, \s) from generated range tables, and the GPT-2
// bytes<->unicode mapping of byte-level BPE.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pipelm::tok::unicode {

constexpr uint32_t kReplacement = 0xFFFD;

// Decodes the code point at s[pos] and advances pos, the way llama.cpp's
// unicode_cpts_from_utf8 does: the length comes from the lead byte and only the continuation
// bytes' top bits are checked (overlong forms and surrogates decode as they are). A stray
// continuation byte, an invalid lead byte or a truncated sequence gives U+FFFD and advances
// one byte; a value above U+10FFFF also gives U+FFFD.
uint32_t decode_lenient(std::string_view s, size_t& pos);
std::vector<uint32_t> decode_lenient(std::string_view s);

// Appends the UTF-8 encoding of cp (cp <= 0x10FFFF; larger values append U+FFFD).
void append_utf8(std::string& out, uint32_t cp);

bool is_letter(uint32_t cp);
bool is_number(uint32_t cp);
bool is_whitespace(uint32_t cp);

// GPT-2 bytes_to_unicode: the code point that stands for byte b in a byte-level BPE vocabulary.
uint32_t byte_to_codepoint(uint8_t b);
// The inverse; -1 if cp stands for no byte.
int codepoint_to_byte(uint32_t cp);

// Appends the longest valid UTF-8 prefix of `in` to `out`, replacing each invalid sequence
// (maximal subpart, as the WHATWG/Unicode "substitution of maximal subparts" rule) by U+FFFD.
// If `final` is false, an incomplete but so far valid sequence at the end is left unconsumed;
// returns the number of bytes consumed.
size_t sanitize_utf8(std::string_view in, std::string& out, bool final);

// Generated tables (unicode_tables.cc).
struct CodepointRange {
    uint32_t first, last;
};
extern const char* const kUnicodeVersion;
extern const CodepointRange kLetterRanges[];
extern const size_t kLetterRangesCount;
extern const CodepointRange kNumberRanges[];
extern const size_t kNumberRangesCount;
extern const CodepointRange kWhitespaceRanges[];
extern const size_t kWhitespaceRangesCount;

}  // namespace pipelm::tok::unicode
