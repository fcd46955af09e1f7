// Byte-level BPE as llama.cpp's llm_tokenizer_bpe (tokenizer.ggml.model = gpt2) for the glm4
// pre-tokenizer: special-token partition -> glm4 split -> GPT-2 byte encoding -> BPE merges by
// rank (ties: leftmost first) within each pre-token.
#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <unordered_map>

#include "runtime/base/error.h"
#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace pipelm::tok {

namespace {

constexpr const char* kReconvert =
    "the GGUF file's tokenizer metadata is damaged or was not written by llama.cpp's "
    "convert_hf_to_gguf.py; re-convert the model from the original checkpoint";

struct Merge {
    int32_t rank;
    int32_t result;
};

uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string printable(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c == '\n') {
            out += "\\n";
        } else if (c < 0x20 || c == 0x7F) {
            static const char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
        if (out.size() > 80) {
            out += "...";
            break;
        }
    }
    return out;
}

// Token text -> raw bytes: every code point that stands for a byte becomes that byte; any other
// code point is kept as UTF-8.
std::string byte_decode(const std::string& text) {
    std::string out;
    size_t pos = 0;
    while (pos < text.size()) {
        const uint32_t cp = unicode::decode_lenient(text, pos);
        const int b = unicode::codepoint_to_byte(cp);
        if (b >= 0) {
            out += static_cast<char>(b);
        } else {
            unicode::append_utf8(out, cp);
        }
    }
    return out;
}

struct Symbol {
    uint32_t start;
    uint32_t len;  // 0 once merged into its left neighbour
    int32_t prev, next;
    int32_t id;    // token of this text, -1 if none
};

struct Bigram {
    int32_t rank;
    int32_t result;
    int32_t left, right;
    uint32_t left_len, right_len;
};

struct BigramOrder {  // heap top = lowest rank, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
        return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
};

}  // namespace

struct Tokenizer::Impl {
    VocabData v;
    std::vector<int32_t> type;  // effective token type per id
    std::unordered_map<std::string, int32_t> text_to_id;
    std::unordered_map<uint64_t, Merge> merges;
    std::array<int32_t, 256> byte_token{};                // id of the one-byte symbol
    std::array<std::vector<int32_t>, 256> byte_fallback;  // llama.cpp's ids for an untokenizable byte
    std::vector<int32_t> specials;                        // matching order (longest text first)
    std::vector<std::string> pieces;
    std::vector<uint8_t> eog_flag;
    std::vector<int32_t> eog;

    int32_t lookup(std::string_view s) const {
        auto it = text_to_id.find(std::string(s));
        return it == text_to_id.end() ? -1 : it->second;
    }

    void bpe_word(const std::string& w, std::vector<int32_t>& out, std::vector<Symbol>& sym,
                  std::vector<Bigram>& heap) const;
};

Tokenizer::Tokenizer(VocabData vd) {
    auto impl = std::make_shared<Impl>();
    Impl& m = *impl;
    m.v = std::move(vd);
    VocabData& v = m.v;

    if (v.model != "gpt2") {
        PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.model is '", printable(v.model),
                     "', but pipelm supports only 'gpt2' (byte-level BPE), the tokenizer of GLM-4 "
                     "models; use a GLM-4 GGUF converted by llama.cpp's convert_hf_to_gguf.py");
    }
    // pre: "glm4", "chatglm-bpe" and "" select the glm4 pre-tokenizer; other values are accepted
    // and use it too (the GLM-4 family has no other).
    const size_t n = v.tokens.size();
    if (n == 0) {
        PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.tokens is missing or empty: ", kReconvert);
    }
    if (n > static_cast<size_t>(INT32_MAX)) {
        PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.tokens has ", n, " entries, more than token ids can hold");
    }
    if (!v.token_types.empty() && v.token_types.size() != n) {
        PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.token_type has ", v.token_types.size(),
                     " entries but tokenizer.ggml.tokens has ", n, ": ", kReconvert);
    }
    m.type.assign(n, kTokenNormal);
    for (size_t i = 0; i < v.token_types.size(); ++i) {
        const int32_t t = v.token_types[i];
        if (t < kTokenUndefined || t > kTokenByte) {
            PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.token_type[", i, "] = ", t,
                         " is not a token type (0..6) for token '", printable(v.tokens[i]), "': ", kReconvert);
        }
        m.type[i] = t;
    }
    const std::pair<const char*, int32_t> ids[] = {
        {"bos_token_id", v.bos}, {"eos_token_id", v.eos}, {"eot_token_id", v.eot},
        {"unknown_token_id", v.unk}, {"padding_token_id", v.pad}};
    for (const auto& [key, id] : ids) {
        if (id < -1 || id >= static_cast<int64_t>(n)) {
            PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.", key, " = ", id,
                         " is outside the vocabulary of ", n, " tokens: ", kReconvert);
        }
    }

    // Text -> id as llama.cpp: empty texts are renamed, a duplicate text maps to its last id.
    m.text_to_id.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        if (v.tokens[i].empty()) v.tokens[i] = "[EMPTY_" + std::to_string(i) + "]";
        m.text_to_id[v.tokens[i]] = static_cast<int32_t>(i);
    }
    // llama.cpp makes <|endoftext|> a control token whatever its stored type.
    if (int32_t id = m.lookup("<|endoftext|>"); id >= 0 && m.type[id] == kTokenNormal) m.type[id] = kTokenControl;

    // Merges "A B": A, B and AB must all be tokens (as HF tokenizers require); the first
    // occurrence of a pair keeps its rank.
    m.merges.reserve(v.merges.size() * 2);
    for (size_t r = 0; r < v.merges.size(); ++r) {
        const std::string& s = v.merges[r];
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos || sp + 1 >= s.size()) {
            PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.merges[", r, "] = '", printable(s),
                         "' is not of the form 'A B' (two tokens separated by one space): ", kReconvert);
        }
        const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
        const int32_t ia = m.lookup(a), ib = m.lookup(b), iab = m.lookup(a + b);
        const std::string* missing = ia < 0 ? &a : ib < 0 ? &b : nullptr;
        const std::string ab = a + b;
        if (!missing && iab < 0) missing = &ab;
        if (missing) {
            PIPELM_THROW(ErrorCode::kFormat, "tokenizer.ggml.merges[", r, "] = '", printable(s), "' needs the token '",
                         printable(*missing), "', which is not in tokenizer.ggml.tokens (", n,
                         " tokens): the merges do not belong to this vocabulary; ", kReconvert);
        }
        m.merges.emplace(pair_key(ia, ib), Merge{static_cast<int32_t>(r), iab});
    }

    for (int b = 0; b < 256; ++b) {
        std::string enc;
        unicode::append_utf8(enc, unicode::byte_to_codepoint(static_cast<uint8_t>(b)));
        m.byte_token[b] = m.lookup(enc);
        for (char c : enc) {
            const int32_t id = m.lookup(std::string(1, c));
            if (id >= 0) m.byte_fallback[b].push_back(id);
        }
    }

    // Strings matched before pre-tokenization: control, user-defined and unknown tokens, longest
    // first (ties by id).
    for (size_t i = 0; i < n; ++i) {
        const int32_t t = m.type[i];
        if (t == kTokenControl || t == kTokenUserDefined || t == kTokenUnknown) m.specials.push_back(static_cast<int32_t>(i));
    }
    std::stable_sort(m.specials.begin(), m.specials.end(), [&](int32_t a, int32_t b) {
        return v.tokens[a].size() > v.tokens[b].size();
    });

    m.pieces.resize(n);
    for (size_t i = 0; i < n; ++i) {
        switch (m.type[i]) {
            case kTokenControl:
            case kTokenUnknown:
            case kTokenUserDefined:
                m.pieces[i] = v.tokens[i];
                break;
            case kTokenUnused:
                break;
            default:
                m.pieces[i] = byte_decode(v.tokens[i]);
        }
    }

    m.eog_flag.assign(n, 0);
    for (const char* s : {"<|endoftext|>", "<|user|>", "<|observation|>"}) {
        if (int32_t id = m.lookup(s); id >= 0) m.eog_flag[id] = 1;
    }
    if (v.eos >= 0) m.eog_flag[v.eos] = 1;
    if (v.eot >= 0) m.eog_flag[v.eot] = 1;
    for (size_t i = 0; i < n; ++i) {
        if (m.eog_flag[i]) m.eog.push_back(static_cast<int32_t>(i));
    }
    impl_ = std::move(impl);
}

void Tokenizer::Impl::bpe_word(const std::string& w, std::vector<int32_t>& out, std::vector<Symbol>& sym,
                               std::vector<Bigram>& heap) const {
    auto emit_byte = [&](uint8_t b) {
        if (byte_token[b] >= 0) {
            out.push_back(byte_token[b]);
        } else {
            out.insert(out.end(), byte_fallback[b].begin(), byte_fallback[b].end());
        }
    };
    const size_t len = w.size();
    if (len == 1) {
        emit_byte(static_cast<uint8_t>(w[0]));
        return;
    }
    sym.clear();
    for (size_t i = 0; i < len; ++i) {
        sym.push_back(Symbol{static_cast<uint32_t>(i), 1, static_cast<int32_t>(i) - 1,
                             i + 1 < len ? static_cast<int32_t>(i + 1) : -1,
                             byte_token[static_cast<uint8_t>(w[i])]});
    }
    heap.clear();
    const BigramOrder order;
    auto add = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0 || sym[l].id < 0 || sym[r].id < 0) return;
        auto it = merges.find(pair_key(sym[l].id, sym[r].id));
        if (it == merges.end()) return;
        heap.push_back(Bigram{it->second.rank, it->second.result, l, r, sym[l].len, sym[r].len});
        std::push_heap(heap.begin(), heap.end(), order);
    };
    for (size_t i = 1; i < len; ++i) add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), order);
        const Bigram bg = heap.back();
        heap.pop_back();
        Symbol& l = sym[bg.left];
        Symbol& r = sym[bg.right];
        // A bigram is stale once either side has grown or been merged away.
        if (l.len != bg.left_len || r.len != bg.right_len) continue;
        l.id = bg.result;
        l.len += r.len;
        r.len = 0;
        l.next = r.next;
        if (r.next >= 0) sym[r.next].prev = bg.left;
        add(l.prev, bg.left);
        add(bg.left, l.next);
    }
    for (int32_t i = 0; i != -1; i = sym[i].next) {
        const Symbol& s = sym[i];
        if (s.id >= 0) {
            out.push_back(s.id);
        } else {
            // Only unmerged single bytes can lack a token (merge results are validated).
            emit_byte(static_cast<uint8_t>(w[s.start]));
        }
    }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
    const Impl& m = *impl_;
    std::vector<int32_t> out;
    if (text.empty()) return out;

    // Partition the text at special tokens: each special token in turn (longest first) splits
    // every remaining text fragment at all its non-overlapping occurrences, left to right.
    struct Fragment {
        int32_t id;  // -1: text
        size_t off, len;
    };
    std::vector<Fragment> frags{{-1, 0, text.size()}}, next;
    for (int32_t id : m.specials) {
        const int32_t t = m.type[id];
        if (!parse_special && (t == kTokenControl || t == kTokenUnknown)) continue;
        const std::string& s = m.v.tokens[id];
        bool found = false;
        for (const Fragment& f : frags) {
            if (f.id < 0 && text.substr(f.off, f.len).find(s) != std::string_view::npos) {
                found = true;
                break;
            }
        }
        if (!found) continue;
        next.clear();
        for (const Fragment& f : frags) {
            if (f.id >= 0) {
                next.push_back(f);
                continue;
            }
            const std::string_view part = text.substr(f.off, f.len);
            size_t at = 0;
            while (true) {
                const size_t hit = part.find(s, at);
                if (hit == std::string_view::npos) break;
                if (hit > at) next.push_back({-1, f.off + at, hit - at});
                next.push_back({id, 0, 0});
                at = hit + s.size();
            }
            if (at < part.size()) next.push_back({-1, f.off + at, part.size() - at});
        }
        frags.swap(next);
    }

    out.reserve(text.size() / 3 + 8);
    std::vector<Symbol> sym;
    std::vector<Bigram> heap;
    std::string word;
    for (const Fragment& f : frags) {
        if (f.id >= 0) {
            out.push_back(f.id);
            continue;
        }
        const std::vector<uint32_t> cpts = unicode::decode_lenient(text.substr(f.off, f.len));
        size_t start = 0;
        for (size_t n : split_glm4(cpts)) {
            word.clear();
            for (size_t i = start; i < start + n; ++i) unicode::append_utf8(word, cpts[i]);
            start += n;
            m.bpe_word(word, out, sym, heap);
        }
    }
    return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
        PIPELM_THROW(ErrorCode::kInvalidArgument, "token id ", id, " is outside the vocabulary [0, ", n_vocab(),
                     "): the ids do not come from this model's tokenizer");
    }
    return impl_->pieces[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
    std::string out;
    for (int32_t id : ids) {
        if (id < 0 || id >= n_vocab()) token_to_piece(id);  // throws
        out += impl_->pieces[id];
    }
    return out;
}

int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(impl_->pieces.size()); }

bool Tokenizer::is_eog(int32_t id) const {
    return id >= 0 && id < n_vocab() && impl_->eog_flag[id];
}

std::vector<int32_t> Tokenizer::eog_ids() const { return impl_->eog; }

int32_t Tokenizer::find_token(std::string_view text) const { return impl_->lookup(text); }

const VocabData& Tokenizer::vocab() const { return impl_->v; }

StreamDecoder::StreamDecoder(const Tokenizer& t) : tok_(&t) {}

std::string StreamDecoder::push(int32_t id) {
    pending_ += tok_->token_to_piece(id);
    std::string out;
    const size_t used = unicode::sanitize_utf8(pending_, out, /*final=*/false);
    pending_.erase(0, used);
    return out;
}

std::string StreamDecoder::finish() {
    std::string out;
    unicode::sanitize_utf8(pending_, out, /*final=*/true);
    pending_.clear();
    return out;
}

}  // namespace pipelm::tok
