#include "runtime/tokenizer/unicode.h"

#include <array>

namespace pipelm::tok::unicode {

uint32_t decode_lenient(std::string_view s, size_t& pos) {
    const size_t n = s.size();
    const uint8_t b0 = static_cast<uint8_t>(s[pos]);
    auto cont = [&](size_t i) { return i < n && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80; };
    auto low6 = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i]) & 0x3F); };
    if (b0 < 0x80) {
        pos += 1;
        return b0;
    }
    uint32_t cp = kReplacement;
    size_t len = 1;
    if ((b0 & 0x40) == 0) {
        // stray continuation byte
    } else if ((b0 & 0x20) == 0) {
        if (cont(pos + 1)) {
            cp = ((b0 & 0x1Fu) << 6) | low6(pos + 1);
            len = 2;
        }
    } else if ((b0 & 0x10) == 0) {
        if (cont(pos + 1) && cont(pos + 2)) {
            cp = ((b0 & 0x0Fu) << 12) | (low6(pos + 1) << 6) | low6(pos + 2);
            len = 3;
        }
    } else if ((b0 & 0x08) == 0) {
        if (cont(pos + 1) && cont(pos + 2) && cont(pos + 3)) {
            cp = ((b0 & 0x07u) << 18) | (low6(pos + 1) << 12) | (low6(pos + 2) << 6) | low6(pos + 3);
            len = 4;
            if (cp > 0x10FFFF) cp = kReplacement;
        }
    }
    pos += len;
    return cp;
}

std::vector<uint32_t> decode_lenient(std::string_view s) {
    std::vector<uint32_t> out;
    out.reserve(s.size());
    size_t pos = 0;
    while (pos < s.size()) out.push_back(decode_lenient(s, pos));
    return out;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp > 0x10FFFF) cp = kReplacement;
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

namespace {

bool in_ranges(const CodepointRange* r, size_t count, uint32_t cp) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (cp < r[mid].first) {
            hi = mid;
        } else if (cp > r[mid].last) {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    return false;
}

enum : uint8_t { kL = 1, kN = 2, kWS = 4 };

// Classes of the first 64K code points, built once from the range tables.
const std::array<uint8_t, 0x10000>& bmp_classes() {
    static const std::array<uint8_t, 0x10000> table = [] {
        std::array<uint8_t, 0x10000> t{};
        auto mark = [&](const CodepointRange* r, size_t count, uint8_t bit) {
            for (size_t i = 0; i < count && r[i].first < 0x10000; ++i) {
                for (uint32_t cp = r[i].first; cp <= r[i].last && cp < 0x10000; ++cp) t[cp] |= bit;
            }
        };
        mark(kLetterRanges, kLetterRangesCount, kL);
        mark(kNumberRanges, kNumberRangesCount, kN);
        mark(kWhitespaceRanges, kWhitespaceRangesCount, kWS);
        return t;
    }();
    return table;
}

}  // namespace

bool is_letter(uint32_t cp) {
    if (cp < 0x10000) return bmp_classes()[cp] & kL;
    return in_ranges(kLetterRanges, kLetterRangesCount, cp);
}

bool is_number(uint32_t cp) {
    if (cp < 0x10000) return bmp_classes()[cp] & kN;
    return in_ranges(kNumberRanges, kNumberRangesCount, cp);
}

bool is_whitespace(uint32_t cp) {
    if (cp < 0x10000) return bmp_classes()[cp] & kWS;
    return in_ranges(kWhitespaceRanges, kWhitespaceRangesCount, cp);
}

namespace {

struct ByteMap {
    std::array<uint32_t, 256> to_cp{};
    std::array<int16_t, 512> from_cp{};  // every mapped code point is < 0x144
    ByteMap() {
        from_cp.fill(-1);
        // Printable Latin-1 bytes stand for themselves; the other 68 bytes take 256, 257, ...
        uint32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            to_cp[b] = keep ? static_cast<uint32_t>(b) : next++;
            from_cp[to_cp[b]] = static_cast<int16_t>(b);
        }
    }
};

const ByteMap& byte_map() {
    static const ByteMap m;
    return m;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return byte_map().to_cp[b]; }

int codepoint_to_byte(uint32_t cp) {
    return cp < 512 ? byte_map().from_cp[cp] : -1;
}

size_t sanitize_utf8(std::string_view in, std::string& out, bool final) {
    static const char kFFFD[] = "\xEF\xBF\xBD";
    const size_t n = in.size();
    size_t i = 0;
    while (i < n) {
        const uint8_t b = static_cast<uint8_t>(in[i]);
        if (b < 0x80) {
            out += static_cast<char>(b);
            ++i;
            continue;
        }
        int need = 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
        } else if (b == 0xE0) {
            need = 2, lo = 0xA0;
        } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
            need = 2;
        } else if (b == 0xED) {
            need = 2, hi = 0x9F;
        } else if (b == 0xF0) {
            need = 3, lo = 0x90;
        } else if (b >= 0xF1 && b <= 0xF3) {
            need = 3;
        } else if (b == 0xF4) {
            need = 3, hi = 0x8F;
        } else {
            out += kFFFD;
            ++i;
            continue;
        }
        size_t j = i + 1;
        bool invalid = false;
        for (int k = 0; k < need; ++k, ++j) {
            if (j >= n) {
                if (!final) return i;  // incomplete: wait for more bytes
                invalid = true;
                break;
            }
            const uint8_t c = static_cast<uint8_t>(in[j]);
            if (c < (k == 0 ? lo : 0x80) || c > (k == 0 ? hi : 0xBF)) {
                invalid = true;
                break;
            }
        }
        if (invalid) {
            out += kFFFD;
            i = j;  // the offending byte starts the next sequence
        } else {
            out.append(in.data() + i, j - i);
            i = j;
        }
    }
    return n;
}

}  // namespace pipelm::tok::unicode
