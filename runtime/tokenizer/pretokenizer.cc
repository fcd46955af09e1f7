#include "runtime/tokenizer/pretokenizer.h"

#include "runtime/tokenizer/unicode.h"

namespace pipelm::tok {

namespace {

enum : uint8_t { kLetter = 1, kNumber = 2, kSpace = 4, kOther = 8 };

// Class bits of one code point; kOther for anything that is none of the three. A position past
// the end has class 0 ("no character"), which matters: the rules below test for it.
uint8_t classify(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return kLetter;
        if (cp >= '0' && cp <= '9') return kNumber;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return kSpace;
        return kOther;
    }
    uint8_t c = 0;
    if (unicode::is_letter(cp)) c |= kLetter;
    if (unicode::is_number(cp)) c |= kNumber;
    if (unicode::is_whitespace(cp)) c |= kSpace;
    return c != 0 ? c : static_cast<uint8_t>(kOther);
}

uint32_t ascii_lower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; }

}  // namespace

std::vector<size_t> split_glm4(const std::vector<uint32_t>& cpts) {
    const size_t n = cpts.size();
    std::vector<uint8_t> cls(n);
    for (size_t i = 0; i < n; ++i) cls[i] = classify(cpts[i]);
    auto cp_at = [&](size_t i) -> uint32_t { return i < n ? cpts[i] : 0xFFFFFFFFu; };
    auto cls_at = [&](size_t i) -> uint8_t { return i < n ? cls[i] : 0; };
    auto is_crlf = [](uint32_t c) { return c == '\r' || c == '\n'; };

    std::vector<size_t> out;
    out.reserve(n / 3 + 1);
    size_t pos = 0;
    auto emit = [&](size_t end) {
        if (end > pos) out.push_back(end - pos);
        pos = end;
    };

    while (pos < n) {
        const uint32_t cp = cpts[pos];
        const uint8_t c = cls[pos];

        // 's 't 're 've 'm 'll 'd, either case
        if (cp == '\'' && pos + 1 < n) {
            const uint32_t a = ascii_lower(cpts[pos + 1]);
            if (a == 's' || a == 't' || a == 'm' || a == 'd') {
                emit(pos + 2);
                continue;
            }
            if (pos + 2 < n) {
                const uint32_t b = ascii_lower(cpts[pos + 2]);
                if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                    emit(pos + 3);
                    continue;
                }
            }
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (!is_crlf(cp) && !(c & kNumber)) {
            if ((c & kLetter) || (cls_at(pos + 1) & kLetter)) {
                size_t end = pos + 1;
                while (cls_at(end) & kLetter) ++end;
                emit(end);
                continue;
            }
        }

        // \p{N}{1,3}
        if (c & kNumber) {
            size_t end = pos;
            while (cls_at(end) & kNumber) {
                ++end;
                if (end - pos == 3) emit(end);
            }
            emit(end);
            continue;
        }

        // ' '?[^\s\p{L}\p{N}]+[\r\n]*
        {
            const uint8_t c2 = (cp == ' ') ? cls_at(pos + 1) : c;
            if (!(c2 & (kSpace | kLetter | kNumber))) {
                size_t end = pos + (cp == ' ' ? 1 : 0);
                uint8_t ce = cls_at(end);
                while (ce != 0 && !(ce & (kSpace | kLetter | kNumber))) ce = cls_at(++end);
                while (is_crlf(cp_at(end))) ++end;
                emit(end);
                continue;
            }
        }

        size_t n_space = 0;
        size_t last_crlf_end = 0;
        while (cls_at(pos + n_space) & kSpace) {
            if (is_crlf(cpts[pos + n_space])) last_crlf_end = pos + n_space + 1;
            ++n_space;
        }
        // \s*[\r\n]+
        if (last_crlf_end > 0) {
            emit(last_crlf_end);
            continue;
        }
        // \s+(?!\S): all but the last space when more text follows
        if (n_space > 1 && pos + n_space < n) {
            emit(pos + n_space - 1);
            continue;
        }
        // \s+
        if (n_space > 0) {
            emit(pos + n_space);
            continue;
        }
        emit(pos + 1);  // unreachable: every code point has a class
    }
    return out;
}

std::vector<std::string> pretokenize_glm4(std::string_view text) {
    const std::vector<uint32_t> cpts = unicode::decode_lenient(text);
    std::vector<std::string> words;
    size_t start = 0;
    for (size_t len : split_glm4(cpts)) {
        std::string w;
        for (size_t i = start; i < start + len; ++i) unicode::append_utf8(w, cpts[i]);
        words.push_back(std::move(w));
        start += len;
    }
    return words;
}

}  // namespace pipelm::tok
