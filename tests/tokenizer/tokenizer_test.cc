// Tokenizer tests: exact ids against llama.cpp references (glm4-tiny tokenize.json, the whole
// glm4-demo validation text), round trips, streaming decode, chat template, vocabulary errors.
// Fixtures live in tests/data/tokenizer (see its README.md); no GGUF reader is needed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace pipelm::tok {
namespace {

const std::string kData = std::string(PIPELM_TEST_DATA) + "/tokenizer/";

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open test fixture " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

VocabData load_vocab(const std::string& name) {
    const auto j = nlohmann::json::parse(read_file(kData + name));
    VocabData v;
    v.model = j.at("tokenizer.ggml.model").get<std::string>();
    v.pre = j.at("tokenizer.ggml.pre").get<std::string>();
    v.tokens = j.at("tokenizer.ggml.tokens").get<std::vector<std::string>>();
    if (j.contains("tokenizer.ggml.token_type")) v.token_types = j.at("tokenizer.ggml.token_type").get<std::vector<int32_t>>();
    v.merges = j.at("tokenizer.ggml.merges").get<std::vector<std::string>>();
    auto id = [&](const char* key) { return j.value(key, int32_t{-1}); };
    v.bos = id("tokenizer.ggml.bos_token_id");
    v.eos = id("tokenizer.ggml.eos_token_id");
    v.eot = id("tokenizer.ggml.eot_token_id");
    v.unk = id("tokenizer.ggml.unknown_token_id");
    v.pad = id("tokenizer.ggml.padding_token_id");
    v.chat_template = j.value("tokenizer.chat_template", std::string());
    return v;
}

const Tokenizer& tiny() {
    static const Tokenizer t(load_vocab("glm4-tiny-vocab.json"));
    return t;
}

const Tokenizer& demo() {
    static const Tokenizer t(load_vocab("glm4-demo-vocab.json"));
    return t;
}

std::vector<int32_t> ids_of(const nlohmann::json& a) { return a.get<std::vector<int32_t>>(); }

std::string escaped(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

// ---- exact ids against llama.cpp --------------------------------------------------------------

TEST(TokTokenizer, TinyMatchesLlamaCppTokenizeJson) {
    const auto j = nlohmann::json::parse(read_file(kData + "glm4-tiny-tokenize.json"));
    const auto& cases = j.at("cases");
    ASSERT_EQ(cases.size(), 33u);
    for (const auto& c : cases) {
        const std::string text = c.at("text").get<std::string>();
        SCOPED_TRACE("text: \"" + escaped(text) + "\"");
        const std::vector<int32_t> plain = ids_of(c.at("ids"));
        const std::vector<int32_t> special = ids_of(c.at("ids_parse_special"));
        EXPECT_EQ(tiny().encode(text, false), plain);
        EXPECT_EQ(tiny().encode(text, true), special);
        EXPECT_EQ(tiny().decode(plain), text);
        EXPECT_EQ(tiny().decode(special), text);
    }
}

TEST(TokTokenizer, DemoValidationTextMatchesLlamaCpp) {
    const std::string text = read_file(kData + "glm4-demo-valid.txt");
    const std::string raw = read_file(kData + "glm4-demo-valid-ids.u16");
    ASSERT_EQ(text.size(), 167736u);
    ASSERT_EQ(raw.size(), 2u * 44783u);
    std::vector<int32_t> want(raw.size() / 2);
    for (size_t i = 0; i < want.size(); ++i) {
        want[i] = static_cast<uint8_t>(raw[2 * i]) | (static_cast<uint8_t>(raw[2 * i + 1]) << 8);
    }

    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> got = demo().encode(text, false);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("encoded %zu bytes into %zu tokens in %.3f s\n", text.size(), got.size(), secs);

    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(got[i], want[i]) << "first difference at token " << i;
    }
    EXPECT_EQ(demo().decode(got), text);
    EXPECT_EQ(demo().encode(text, true), want);  // the text holds no special-token strings
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
    EXPECT_LT(secs, 1.0) << "encoding 168 KB should take well under a second";
#endif
}

TEST(TokTokenizer, DemoSpecialTokens) {
    const Tokenizer& t = demo();
    EXPECT_EQ(t.n_vocab(), 4096);
    EXPECT_EQ(t.encode("[gMASK]<sop>", true), (std::vector<int32_t>{4088, 4090}));
    EXPECT_EQ(t.find_token("<|assistant|>"), 4094);
    EXPECT_EQ(t.eog_ids(), (std::vector<int32_t>{4086, 4093, 4095}));
}

// ---- pre-tokenizer --------------------------------------------------------------------------

std::vector<std::string> split(const std::string& s) { return pretokenize_glm4(s); }
using Words = std::vector<std::string>;

TEST(TokPretokenizer, Glm4Regex) {
    EXPECT_EQ(split("Hello world"), (Words{"Hello", " world"}));
    EXPECT_EQ(split("12345 678"), (Words{"123", "45", " ", "678"}));
    EXPECT_EQ(split("don't DON'T we're I'LL"), (Words{"don", "'t", " DON", "'T", " we", "'re", " I", "'LL"}));
    EXPECT_EQ(split("'x"), (Words{"'x"}));
    EXPECT_EQ(split("a  b"), (Words{"a", " ", " b"}));
    EXPECT_EQ(split("a   "), (Words{"a", "   "}));
    EXPECT_EQ(split("   x"), (Words{"  ", " x"}));
    EXPECT_EQ(split("x\n\ny"), (Words{"x", "\n\n", "y"}));
    EXPECT_EQ(split("x \r\n \ty"), (Words{"x", " \r\n", " ", "\ty"}));
    EXPECT_EQ(split("a, b!!\n\nc"), (Words{"a", ",", " b", "!!\n\n", "c"}));
    EXPECT_EQ(split(" ?!"), (Words{" ?!"}));
    EXPECT_EQ(split("3.14"), (Words{"3", ".", "14"}));
    EXPECT_EQ(split("$42"), (Words{"$", "42"}));
    EXPECT_EQ(split("(x)"), (Words{"(x", ")"}));
    EXPECT_EQ(split("你好，世界"), (Words{"你好", "，世界"}));
    EXPECT_EQ(split("Привет мир"), (Words{"Привет", " мир"}));
    EXPECT_EQ(split("x\u3000y"), (Words{"x", "\u3000y"}));         // ideographic space is \s
    EXPECT_EQ(split("x\u00A0\u00A0y"), (Words{"x", "\u00A0", "\u00A0y"}));
    EXPECT_EQ(split("\u0663\u0664\u0665\u0666"), (Words{"\u0663\u0664\u0665", "\u0666"}));  // Arabic-Indic digits are \p{N}
    EXPECT_EQ(split("😀👍"), (Words{"😀👍"}));
    EXPECT_EQ(split(" "), (Words{" "}));
    EXPECT_EQ(split(""), (Words{}));
    // Invalid UTF-8 decodes to U+FFFD, as in llama.cpp.
    EXPECT_EQ(split("a\xff"), (Words{"a", "\xEF\xBF\xBD"}));
}

TEST(TokUnicode, Classes) {
    using namespace unicode;
    EXPECT_TRUE(is_letter('a'));
    EXPECT_TRUE(is_letter(0x4E2D));    // 中
    EXPECT_TRUE(is_letter(0x20000));   // CJK Ext B
    EXPECT_TRUE(is_letter(0x02B0));    // modifier letter (Lm)
    EXPECT_FALSE(is_letter(0x0301));   // combining mark
    EXPECT_FALSE(is_letter('1'));
    EXPECT_TRUE(is_number(0x00B2));    // superscript two (No)
    EXPECT_TRUE(is_number(0x2160));    // Roman numeral one (Nl)
    EXPECT_TRUE(is_number(0x1D7CE));   // mathematical bold digit zero
    EXPECT_FALSE(is_number('a'));
    for (uint32_t cp : {0x09u, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au, 0x2028u, 0x2029u, 0x202Fu,
                        0x205Fu, 0x3000u}) {
        EXPECT_TRUE(is_whitespace(cp)) << std::hex << cp;
    }
    for (uint32_t cp : {0x08u, 0x1Cu, 0x200Bu, 0x180Eu, 0xFEFFu, 0x61u}) EXPECT_FALSE(is_whitespace(cp)) << std::hex << cp;
    EXPECT_EQ(byte_to_codepoint(' '), 0x120u);  // 'Ġ'
    EXPECT_EQ(byte_to_codepoint('\n'), 0x10Au);  // 'Ċ'
    EXPECT_EQ(byte_to_codepoint('A'), static_cast<uint32_t>('A'));
    for (int b = 0; b < 256; ++b) EXPECT_EQ(codepoint_to_byte(byte_to_codepoint(static_cast<uint8_t>(b))), b);
}

// ---- round trips ----------------------------------------------------------------------------

TEST(TokTokenizer, RoundTripSamples) {
    const std::vector<std::string> samples = {
        "", " ", "\n", "\r\n\r\n", "\t\tindented\ttabs\t", "line one\r\nline two\r\n",
        "人工智能是计算机科学的一个分支。", "日本語のテキスト、한국어 텍스트", "emoji 😀👍🏽🇨🇳 and ZWJ 👨‍👩‍👧",
        "combining: e\u0301 a\u0308 \u0915\u094D\u0937", "math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑∫ ½ ⅔ ², ①②",
        "mixed 中文 and English 混合文本 123456789", "nul\x00 and \x7f del", "quotes “curly” ‘single’ — dash",
        "<|user|> looks special but is text when parse_special is false", "   \u3000\u00A0 spaces ",
    };
    for (const Tokenizer* t : {&tiny(), &demo()}) {
        for (const std::string& s : samples) {
            SCOPED_TRACE("text: \"" + escaped(s) + "\"");
            EXPECT_EQ(t->decode(t->encode(s, false)), s);
            EXPECT_EQ(t->decode(t->encode(s, true)), s);
        }
    }
    // Embedded NUL: string_view keeps it.
    const std::string nul("a\0b", 3);
    EXPECT_EQ(tiny().decode(tiny().encode(nul, false)), nul);
}

std::string random_utf8(std::mt19937& rng, size_t n_cp) {
    // Weighted mix of ASCII, whitespace, Latin-1, CJK, Cyrillic, combining marks, emoji, digits.
    static const std::vector<std::pair<uint32_t, uint32_t>> pools = {
        {0x20, 0x7E}, {0x20, 0x7E}, {0x20, 0x7E}, {0x09, 0x0D}, {0x00, 0x1F}, {0xA0, 0xFF}, {0x4E00, 0x4FFF},
        {0x0400, 0x04FF}, {0x0300, 0x036F}, {0x1F600, 0x1F64F}, {0x0660, 0x0669}, {0x2000, 0x206F},
        {0x3000, 0x303F}, {0xAC00, 0xAD00}, {0x10000, 0x10FFFF},
    };
    std::string s;
    for (size_t i = 0; i < n_cp; ++i) {
        const auto& p = pools[rng() % pools.size()];
        uint32_t cp = p.first + rng() % (p.second - p.first + 1);
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
        if (rng() % 8 == 0) cp = '\'';
        unicode::append_utf8(s, cp);
    }
    return s;
}

TEST(TokTokenizer, RoundTripRandomUtf8) {
    std::mt19937 rng(1234);
    for (int iter = 0; iter < 300; ++iter) {
        const std::string s = random_utf8(rng, 1 + rng() % 60);
        SCOPED_TRACE("text: \"" + escaped(s) + "\"");
        for (const Tokenizer* t : {&tiny(), &demo()}) {
            const std::vector<int32_t> ids = t->encode(s, false);
            ASSERT_EQ(t->decode(ids), s);
            for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t->n_vocab());
        }
    }
}

TEST(TokTokenizer, InvalidUtf8IsTokenizedAsReplacementCharacter) {
    EXPECT_EQ(tiny().encode("a\xff" "b", false), tiny().encode("a\xEF\xBF\xBD" "b", false));
    EXPECT_EQ(tiny().encode("\xE4\xB8", false), tiny().encode("\xEF\xBF\xBD\xEF\xBF\xBD", false));
}

// ---- pieces, special tokens, EOG -----------------------------------------------------------

TEST(TokTokenizer, PiecesAndSpecialTokens) {
    const Tokenizer& t = tiny();
    EXPECT_EQ(t.n_vocab(), 666);
    const int32_t the = t.find_token("Ġthe");
    ASSERT_GE(the, 0);
    EXPECT_EQ(t.token_to_piece(the), " the");
    EXPECT_EQ(t.token_to_piece(t.find_token("Ċ")), "\n");
    EXPECT_EQ(t.token_to_piece(663), "<|user|>");
    EXPECT_EQ(t.find_token("<|user|>"), 663);
    EXPECT_EQ(t.find_token("no such token"), -1);
    EXPECT_EQ(t.encode("<|user|>", true), (std::vector<int32_t>{663}));
    EXPECT_GT(t.encode("<|user|>", false).size(), 1u);
    EXPECT_EQ(t.encode("[gMASK]<sop><|user|>\nhi<|assistant|>", true).front(), 658);
    EXPECT_THROW(t.token_to_piece(666), Error);
    EXPECT_THROW(t.token_to_piece(-1), Error);
    EXPECT_THROW(t.decode({1, 9999}), Error);
    EXPECT_EQ(t.vocab().chat_template.rfind("[gMASK]<sop>", 0), 0u);
}

TEST(TokTokenizer, EndOfGeneration) {
    const Tokenizer& t = tiny();
    EXPECT_EQ(t.eog_ids(), (std::vector<int32_t>{656, 663, 665}));
    EXPECT_TRUE(t.is_eog(656));  // <|endoftext|> (eos)
    EXPECT_TRUE(t.is_eog(663));  // <|user|> (eot)
    EXPECT_TRUE(t.is_eog(665));  // <|observation|>
    EXPECT_FALSE(t.is_eog(664));  // <|assistant|>
    EXPECT_FALSE(t.is_eog(0));
    EXPECT_FALSE(t.is_eog(-1));
    EXPECT_FALSE(t.is_eog(100000));
}

// ---- streaming decode -----------------------------------------------------------------------

TEST(TokStreamDecoder, HoldsBackSplitCharacters) {
    const Tokenizer& t = tiny();
    const std::string text = "世界 ok 😀!";
    const std::vector<int32_t> ids = t.encode(text, false);
    // Some token must end inside a multi-byte character for this test to mean anything.
    bool split_seen = false;
    StreamDecoder sd(t);
    std::string out;
    for (int32_t id : ids) {
        const std::string piece = sd.push(id);
        std::string check;
        EXPECT_EQ(unicode::sanitize_utf8(piece, check, true), piece.size());
        EXPECT_EQ(check, piece) << "push returned invalid UTF-8";
        if (piece.empty()) split_seen = true;
        out += piece;
    }
    out += sd.finish();
    EXPECT_TRUE(split_seen);
    EXPECT_EQ(out, text);

    // The 3 bytes of 世 as separate byte tokens.
    const std::string shi = "世";
    std::vector<int32_t> bytes;
    for (unsigned char c : shi) {
        std::string enc;
        unicode::append_utf8(enc, unicode::byte_to_codepoint(c));
        bytes.push_back(t.find_token(enc));
        ASSERT_GE(bytes.back(), 0);
    }
    StreamDecoder s2(t);
    EXPECT_EQ(s2.push(bytes[0]), "");
    EXPECT_EQ(s2.push(bytes[1]), "");
    EXPECT_EQ(s2.push(bytes[2]), shi);
    EXPECT_EQ(s2.finish(), "");

    // An incomplete sequence at the end becomes U+FFFD; an invalid one right away.
    StreamDecoder s3(t);
    EXPECT_EQ(s3.push(bytes[0]), "");
    EXPECT_EQ(s3.finish(), "\xEF\xBF\xBD");
    EXPECT_EQ(s3.push(bytes[0]), "");
    EXPECT_EQ(s3.push(t.find_token("a")), "\xEF\xBF\xBD" "a");
    EXPECT_EQ(s3.push(663), "<|user|>");
    EXPECT_EQ(s3.finish(), "");
}

TEST(TokUnicode, SanitizeUtf8) {
    auto fin = [](const std::string& s) {
        std::string o;
        unicode::sanitize_utf8(s, o, true);
        return o;
    };
    const std::string r = "\xEF\xBF\xBD";
    EXPECT_EQ(fin("ok é 中 😀"), "ok é 中 😀");
    EXPECT_EQ(fin("\xC0\xAF"), r + r);           // overlong
    EXPECT_EQ(fin("\xED\xA0\x80"), r + r + r);   // surrogate
    EXPECT_EQ(fin("\xF4\x90\x80\x80"), r + r + r + r);  // > U+10FFFF
    EXPECT_EQ(fin("\xE4\xB8" "x"), r + "x");     // truncated, maximal subpart
    EXPECT_EQ(fin("\x80"), r);
    std::string o;
    EXPECT_EQ(unicode::sanitize_utf8("a\xF0\x9F\x98", o, false), 1u);
    EXPECT_EQ(o, "a");
}

// ---- chat template --------------------------------------------------------------------------

TEST(TokChatTemplate, Glm4_0414) {
    EXPECT_EQ(apply_chat_template({{"user", "hi"}}, true), "[gMASK]<sop><|user|>\nhi<|assistant|>");
    EXPECT_EQ(apply_chat_template({{"user", "hi"}}, false), "[gMASK]<sop><|user|>\nhi");
    EXPECT_EQ(apply_chat_template({}, true), "[gMASK]<sop><|assistant|>");
    EXPECT_EQ(apply_chat_template({{"system", "You are helpful."},
                                   {"user", "Hello"},
                                   {"assistant", "\nHi there."},
                                   {"user", "Weather?"},
                                   {"assistant", "calling"},
                                   {"observation", "{\"t\": 20}"}},
                                  true),
              "[gMASK]<sop><|system|>\nYou are helpful.<|user|>\nHello<|assistant|>\n\nHi there."
              "<|user|>\nWeather?<|assistant|>\ncalling<|observation|>\n{\"t\": 20}<|assistant|>");
    // System messages come first wherever they are, as in the official template.
    EXPECT_EQ(apply_chat_template({{"user", "a"}, {"system", "s1"}, {"system", "s2"}}, false),
              "[gMASK]<sop><|system|>\ns1<|system|>\ns2<|user|>\na");
    try {
        apply_chat_template({{"user", "a"}, {"tool", "b"}}, true);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
        EXPECT_NE(std::string(e.what()).find("'tool'"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("observation"), std::string::npos) << e.what();
    }
}

TEST(TokChatTemplate, TokenizesWithSpecialTokens) {
    const std::string prompt = apply_chat_template({{"user", "hi"}}, true);
    const std::vector<int32_t> ids = tiny().encode(prompt, true);
    ASSERT_GE(ids.size(), 5u);
    EXPECT_EQ(ids[0], 658);  // [gMASK]
    EXPECT_EQ(ids[1], 660);  // <sop>
    EXPECT_EQ(ids[2], 663);  // <|user|>
    EXPECT_EQ(ids.back(), 664);  // <|assistant|>
}

// ---- vocabulary validation ------------------------------------------------------------------

void expect_format_error(VocabData v, const std::vector<std::string>& needles) {
    try {
        Tokenizer t(std::move(v));
        FAIL() << "expected pipelm::Error";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kFormat);
        for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
}

TEST(TokTokenizer, RejectsMalformedVocabularies) {
    const VocabData good = load_vocab("glm4-tiny-vocab.json");
    {
        VocabData v = good;
        v.model = "llama";
        expect_format_error(v, {"tokenizer.ggml.model", "'llama'", "gpt2"});
    }
    {
        VocabData v = good;
        v.merges.push_back("Ġt zzzz");
        expect_format_error(v, {"tokenizer.ggml.merges[400]", "'zzzz'", "not in tokenizer.ggml.tokens"});
    }
    {
        VocabData v = good;
        v.merges[3] = "nospace";
        expect_format_error(v, {"tokenizer.ggml.merges[3]", "'A B'"});
    }
    {
        VocabData v = good;
        v.merges.push_back("Ġthe Ġthe");  // both parts exist, the merged token does not
        expect_format_error(v, {"'ĠtheĠthe'"});
    }
    {
        VocabData v = good;
        v.token_types.pop_back();
        expect_format_error(v, {"tokenizer.ggml.token_type", "665", "666"});
    }
    {
        VocabData v = good;
        v.token_types[5] = 42;
        expect_format_error(v, {"tokenizer.ggml.token_type[5] = 42"});
    }
    {
        VocabData v = good;
        v.eos = 666;
        expect_format_error(v, {"tokenizer.ggml.eos_token_id = 666", "666 tokens"});
    }
    {
        VocabData v = good;
        v.tokens.clear();
        v.token_types.clear();
        expect_format_error(v, {"tokenizer.ggml.tokens"});
    }
}

TEST(TokTokenizer, AcceptsPreTypesAndMissingTypes) {
    const VocabData good = load_vocab("glm4-tiny-vocab.json");
    const std::string text = "Hello, world! 你好";
    const std::vector<int32_t> want = tiny().encode(text, false);
    for (const char* pre : {"", "chatglm-bpe", "something-new"}) {
        VocabData v = good;
        v.pre = pre;
        EXPECT_EQ(Tokenizer(v).encode(text, false), want) << pre;
    }
    VocabData v = good;
    v.token_types.clear();  // all normal: special strings are plain text even with parse_special...
    const Tokenizer t(v);
    EXPECT_EQ(t.encode("<|user|>", true), t.encode("<|user|>", false));
    // ...except <|endoftext|>, which llama.cpp always treats as a control token.
    EXPECT_EQ(t.encode("<|endoftext|>", true), (std::vector<int32_t>{656}));
}

}  // namespace
}  // namespace pipelm::tok
