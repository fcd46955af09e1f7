// GGUF reader/writer round trips and every malformed-file case.
#include "tests/runtime/gguf_test_util.h"
#include <malloc.h>

namespace pipelm {
namespace {

TEST_F(GgufRoundTrip, EveryScalarType) {
    GgufWriter w;
    const Kvs kvs = all_scalar_kvs();
    for (const auto& kv : kvs) w.set(kv.first, kv.second);
    const std::string path = tmp_.path("scalars.gguf");
    w.write(path);
    auto f = GgufFile::open(path);
    EXPECT_EQ(f->version(), 3u);
    EXPECT_EQ(f->alignment(), 32u);
    EXPECT_TRUE(f->tensors().empty());
    ASSERT_EQ(f->metadata().size(), kvs.size());
    for (size_t k = 0; k < kvs.size(); ++k) {
        EXPECT_EQ(f->metadata()[k].first, kvs[k].first) << "file order";
        EXPECT_TRUE(same_value(kvs[k].second, f->metadata()[k].second, kvs[k].first));
    }
    // Typed getters.
    EXPECT_EQ(f->get_int("s.u8"), 0xfe);
    EXPECT_EQ(f->get_int("s.i8"), -128);
    EXPECT_EQ(f->get_int("s.u16"), 0xfedc);
    EXPECT_EQ(f->get_int("s.i16"), -32768);
    EXPECT_EQ(f->get_int("s.u32"), 0xfedcba98ll);
    EXPECT_EQ(f->get_int("s.i32"), std::numeric_limits<int32_t>::min());
    EXPECT_EQ(f->get_int("s.i64"), std::numeric_limits<int64_t>::min());
    EXPECT_EQ(f->get("s.u64").u, std::numeric_limits<uint64_t>::max());
    EXPECT_EQ(f->get_int("s.bool.true"), 1);
    EXPECT_EQ(f->get_int("s.bool.false"), 0);
    EXPECT_EQ(f->get_float("s.f32"), -3.25);
    EXPECT_EQ(f->get_float("s.f64"), 0.1);
    EXPECT_TRUE(std::signbit(f->get_float("s.f64.neg0")));
    EXPECT_TRUE(std::isinf(f->get_float("s.f32.inf")));
    EXPECT_EQ(f->get_float("s.u16"), 65244.0);  // integers widen to floats
    EXPECT_EQ(f->get_string("s.string"), "GLM-4 \xe6\xa8\xa1\xe5\x9e\x8b");
    EXPECT_EQ(f->get_string("s.string.nul"), std::string("a\0b", 3));
    EXPECT_EQ(f->get_string("s.string.empty"), "");
    EXPECT_EQ(f->get_int("missing.key", 17), 17);
    EXPECT_EQ(f->get_float("missing.key", 2.5), 2.5);
    EXPECT_EQ(f->find("missing.key"), nullptr);
    EXPECT_FALSE(f->has("missing.key"));
    EXPECT_TRUE(f->has("s.u8"));
}

TEST_F(GgufRoundTrip, GettersNameFileAndKeyOnMisuse) {
    GgufWriter w;
    for (const auto& kv : all_scalar_kvs()) w.set(kv.first, kv.second);
    const std::string path = tmp_.path("getters.gguf");
    w.write(path);
    auto f = GgufFile::open(path);
    auto expect_throw = [&](const std::function<void()>& fn, const std::string& key, const std::string& word) {
        try {
            fn();
            ADD_FAILURE() << "no error for " << key;
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::kFormat);
            const std::string m = e.what();
            EXPECT_NE(m.find(path), std::string::npos) << m;
            EXPECT_NE(m.find(key), std::string::npos) << m;
            EXPECT_NE(m.find(word), std::string::npos) << m;
        }
    };
    expect_throw([&] { f->get("no.such.key"); }, "no.such.key", "missing");
    expect_throw([&] { f->get_int("s.string"); }, "s.string", "integer");
    expect_throw([&] { f->get_int("s.f32"); }, "s.f32", "integer");
    expect_throw([&] { f->get_string("s.u32"); }, "s.u32", "string");
    expect_throw([&] { f->get_float("s.string"); }, "s.string", "number");
    expect_throw([&] { f->get_string_array("s.string"); }, "s.string", "array");
    expect_throw([&] { f->get_int_array("s.u8"); }, "s.u8", "array");
    expect_throw([&] { f->tensor("no.such.tensor"); }, "no.such.tensor", "missing tensor");
}

TEST_F(GgufRoundTrip, ArraysOfEveryTypeAndNestedArrays) {
    GgufWriter w;
    const Kvs kvs = all_array_kvs();
    for (const auto& kv : kvs) w.set(kv.first, kv.second);
    w.set_string_array("a.helper.strings", {"one", "two", ""});
    w.set_i32_array("a.helper.i32", {-1, 0, 1});
    const std::string path = tmp_.path("arrays.gguf");
    w.write(path);
    auto f = GgufFile::open(path);
    ASSERT_EQ(f->metadata().size(), kvs.size() + 2);
    for (size_t k = 0; k < kvs.size(); ++k) {
        EXPECT_EQ(f->metadata()[k].first, kvs[k].first);
        EXPECT_TRUE(same_value(kvs[k].second, f->metadata()[k].second, kvs[k].first));
    }
    EXPECT_EQ(f->get_string_array("a.helper.strings"), (std::vector<std::string>{"one", "two", ""}));
    EXPECT_EQ(f->get_int_array("a.helper.i32"), (std::vector<int64_t>{-1, 0, 1}));
    EXPECT_EQ(f->get_string_array("a.string")[3], std::string(300, 'x'));
    EXPECT_EQ(f->get_int_array("a.u8"), (std::vector<int64_t>{0, 255, 7}));
    EXPECT_EQ(f->get_int_array("a.i64"), (std::vector<int64_t>{-(1ll << 62), 42}));
    EXPECT_TRUE(f->get_int_array("a.empty").empty());
    EXPECT_TRUE(f->get_string_array("a.empty.string").empty());
    EXPECT_THROW(f->get_int_array("a.nested.i32"), Error);   // elements are arrays
    EXPECT_THROW(f->get_int_array("a.string"), Error);
    EXPECT_THROW(f->get_string_array("a.i32"), Error);
    const Value& deep = f->get("a.nested.8");
    Value v = deep;
    int levels = 0;
    while (v.type == ValueType::kArray) {
        ++levels;
        ASSERT_EQ(v.size(), 1u);
        v = v.at(0);
    }
    EXPECT_EQ(levels, 8);
    EXPECT_EQ(v.type, ValueType::kU16);
    EXPECT_EQ(v.u, 9u);
}

// The writer's bytes are exactly those of the independent spec encoder: both follow §7.1.
TEST_F(GgufRoundTrip, WriterBytesMatchTheSpecEncoder) {
    for (uint32_t align : {32u, 64u}) {
        Kvs kvs = base_kvs();
        for (const auto& kv : all_scalar_kvs()) kvs.push_back(kv);
        for (const auto& kv : all_array_kvs()) kvs.push_back(kv);
        std::vector<RawTensor> ts = base_tensors();
        ts.push_back(raw_tensor("delta", GgmlType::kQ4_K, {256, 3}, 4));
        ts.push_back(raw_tensor("epsilon", GgmlType::kF32, {5}, 5));  // 20 bytes: padded
        GgufWriter w(align);
        for (const auto& kv : kvs) w.set(kv.first, kv.second);
        for (const auto& t : ts) {
            std::vector<int64_t> ne(t.ne.begin(), t.ne.end());
            const std::vector<uint8_t> data = t.data;
            w.add_tensor(t.name, static_cast<GgmlType>(t.type), ne, [data](uint8_t* dst) { std::memcpy(dst, data.data(), data.size()); });
        }
        const std::string path = tmp_.path("writer-" + std::to_string(align) + ".gguf");
        w.write(path);
        if (align != 32) kvs.insert(kvs.begin(), {"general.alignment", vu(ValueType::kU32, align)});
        const Built want = build(kvs, ts, align);
        const std::vector<uint8_t> got = read_bytes(path);
        ASSERT_EQ(got.size(), want.bytes.size()) << "alignment " << align;
        size_t first_diff = 0;
        while (first_diff < got.size() && got[first_diff] == want.bytes[first_diff]) ++first_diff;
        EXPECT_EQ(first_diff, got.size()) << "alignment " << align << ": first differing byte";
        EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    }
}

struct TensorCase {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t bytes;  // expected, computed by hand from the block tables
};

std::vector<TensorCase> tensor_cases() {
    return {
        {"t.f32", GgmlType::kF32, {8, 3}, 8 * 3 * 4},
        {"t.f16", GgmlType::kF16, {16, 2, 2}, 16 * 2 * 2 * 2},
        {"t.q8_0", GgmlType::kQ8_0, {64, 3}, 2 * 34 * 3},
        {"t.q4_K", GgmlType::kQ4_K, {256, 2}, 144 * 2},
        {"t.f32.1d", GgmlType::kF32, {5}, 20},
        {"t.f32.4d", GgmlType::kF32, {2, 3, 4, 5}, 2 * 3 * 4 * 5 * 4},
        {"t.q4_K.wide", GgmlType::kQ4_K, {512, 1}, 2 * 144},
        {"t.bf16", GgmlType::kBF16, {4, 4}, 32},
    };
}

void write_tensor_file(const std::string& path, uint32_t align, uint32_t version) {
    GgufWriter w(align);
    w.set_string("general.architecture", "test");
    uint32_t seed = 100;
    for (const auto& c : tensor_cases()) {
        const std::vector<uint8_t> data = pattern(c.bytes, seed++);
        w.add_tensor(c.name, c.type, c.ne, [data](uint8_t* dst) { std::memcpy(dst, data.data(), data.size()); });
    }
    w.write(path, version);
}

void check_tensor_file(const GgufFile& f, uint32_t align) {
    EXPECT_EQ(f.alignment(), align);
    EXPECT_EQ(f.data_offset() % align, 0u);
    ASSERT_EQ(f.tensors().size(), tensor_cases().size());
    uint32_t seed = 100;
    size_t k = 0;
    for (const auto& c : tensor_cases()) {
        SCOPED_TRACE(c.name + " alignment " + std::to_string(align));
        const TensorInfo& t = f.tensors()[k++];
        EXPECT_EQ(t.name, c.name);
        EXPECT_EQ(&f.tensor(c.name), &t);
        EXPECT_EQ(f.find_tensor(c.name), &t);
        EXPECT_EQ(t.type, c.type);
        EXPECT_EQ(t.ne, c.ne);
        EXPECT_EQ(t.bytes, c.bytes);
        int64_t n = 1;
        for (int64_t d : c.ne) n *= d;
        EXPECT_EQ(t.n_elements(), n);
        EXPECT_EQ(t.offset % align, 0u);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % std::min<uint32_t>(align, 4096), 0u);
        const std::vector<uint8_t> want = pattern(c.bytes, seed++);
        ASSERT_NE(t.data, nullptr);
        EXPECT_EQ(std::memcmp(t.data, want.data(), want.size()), 0) << "tensor bytes differ";
        f.advise_willneed(t);  // best effort, must not fail
    }
    EXPECT_EQ(f.find_tensor("no.such"), nullptr);
}

TEST_F(GgufRoundTrip, TensorTypesShapesAndBytes) {
    for (uint32_t align : {32u, 64u, 1u, 4096u}) {
        const std::string path = tmp_.path("tensors-" + std::to_string(align) + ".gguf");
        write_tensor_file(path, align, 3);
        auto f = GgufFile::open(path);
        EXPECT_EQ(f->version(), 3u);
        EXPECT_EQ(f->file_size(), std::filesystem::file_size(path));
        if (align == 32) {
            EXPECT_FALSE(f->has("general.alignment"));  // the default is not written
        } else {
            EXPECT_EQ(f->get("general.alignment").type, ValueType::kU32);
            EXPECT_EQ(f->get_int("general.alignment"), static_cast<int64_t>(align));
        }
        check_tensor_file(*f, align);
    }
}

TEST_F(GgufRoundTrip, AlignmentSetThroughMetadataIsHonouredOnce) {
    GgufWriter w;
    w.set_u32("general.alignment", 128);
    w.add_tensor("a", GgmlType::kF32, {3}, [](uint8_t* d) { std::memset(d, 1, 12); });
    w.add_tensor("b", GgmlType::kF32, {3}, [](uint8_t* d) { std::memset(d, 2, 12); });
    const std::string path = tmp_.path("align-key.gguf");
    w.write(path);
    auto f = GgufFile::open(path);
    EXPECT_EQ(f->alignment(), 128u);
    EXPECT_EQ(f->metadata().size(), 1u);
    EXPECT_EQ(f->tensor("b").offset, 128u);
    EXPECT_EQ(f->data_offset() % 128, 0u);
    EXPECT_EQ(f->tensor("b").data[11], 2);
    GgufWriter bad;
    EXPECT_THROW(bad.set_u32("general.alignment", 48), Error);
    GgufWriter zero(0);
    EXPECT_THROW(zero.write(tmp_.path("zero.gguf")), Error);
    EXPECT_FALSE(std::filesystem::exists(tmp_.path("zero.gguf")));
    EXPECT_THROW(w.add_tensor("a", GgmlType::kF32, {3}, nullptr), Error);  // duplicate name
}

// A custom alignment changes where the reader expects data: an offset that is a multiple of 32
// but not of 64 is refused, and data starts at the next multiple of 64.
TEST_F(GgufRoundTrip, CustomAlignmentIsWhatTheReaderUses) {
    Kvs kvs = {{"general.alignment", vu(ValueType::kU32, 64)}};
    std::vector<RawTensor> ts = {raw_tensor("a", GgmlType::kF32, {4}, 1), raw_tensor("b", GgmlType::kF32, {4}, 2)};
    Built good = build(kvs, ts, 64);
    EXPECT_EQ(good.offsets[1], 64u);
    write_bytes(tmp_.path("a64.gguf"), good.bytes);
    auto f = GgufFile::open(tmp_.path("a64.gguf"));
    EXPECT_EQ(f->alignment(), 64u);
    EXPECT_EQ(f->data_offset(), good.data_start);
    EXPECT_EQ(f->data_offset() % 64, 0u);
    EXPECT_EQ(std::memcmp(f->tensor("b").data, ts[1].data.data(), 16), 0);
    f.reset();
    patch<uint64_t>(good.bytes, good.ti[1].offset, 32);
    write_bytes(tmp_.path("a64-bad.gguf"), good.bytes);
    EXPECT_TRUE(open_fails(tmp_.path("a64-bad.gguf"), {"'b'", "offset 32", "alignment 64"}));
}

TEST_F(GgufRoundTrip, VersionTwoAndThree) {
    // v2 written directly.
    const std::string v2 = tmp_.path("v2.gguf");
    write_tensor_file(v2, 32, 2);
    auto f2 = GgufFile::open(v2);
    EXPECT_EQ(f2->version(), 2u);
    check_tensor_file(*f2, 32);
    // v3 patched to v2: same content.
    const std::string v3 = tmp_.path("v3.gguf");
    GgufWriter w(64);
    for (const auto& kv : all_array_kvs()) w.set(kv.first, kv.second);
    w.add_tensor("x", GgmlType::kQ8_0, {32, 1}, [](uint8_t* d) { std::memset(d, 0x11, 34); });
    w.write(v3);
    std::vector<uint8_t> b = read_bytes(v3);
    EXPECT_EQ(peek<uint32_t>(b, 4), 3u);
    patch<uint32_t>(b, 4, 2);
    const std::string patched = tmp_.path("v3-as-v2.gguf");
    write_bytes(patched, b);
    auto a = GgufFile::open(v3);
    auto p = GgufFile::open(patched);
    EXPECT_EQ(a->version(), 3u);
    EXPECT_EQ(p->version(), 2u);
    ASSERT_EQ(a->metadata().size(), p->metadata().size());
    for (size_t k = 0; k < a->metadata().size(); ++k)
        EXPECT_TRUE(same_value(a->metadata()[k].second, p->metadata()[k].second, a->metadata()[k].first));
    EXPECT_EQ(p->alignment(), 64u);
    EXPECT_EQ(p->data_offset(), a->data_offset());
    EXPECT_EQ(std::memcmp(p->tensor("x").data, a->tensor("x").data, 34), 0);
}

TEST_F(GgufRoundTrip, MinimalFiles) {
    // Header only: no keys, no tensors.
    Built empty = build({}, {});
    EXPECT_EQ(empty.end_of_infos, 24u);
    EXPECT_EQ(empty.bytes.size(), 32u);  // padded to the alignment, as the writer does
    for (size_t size : {size_t(24), size_t(32)}) {  // without tensors the padding is optional
        write_bytes(tmp_.path("empty.gguf"), std::vector<uint8_t>(empty.bytes.begin(), empty.bytes.begin() + size));
        auto f = GgufFile::open(tmp_.path("empty.gguf"));
        EXPECT_TRUE(f->metadata().empty());
        EXPECT_TRUE(f->tensors().empty());
    }
    // A zero-element tensor takes no bytes and may share its offset.
    Built zero = build({}, {raw_tensor("z", GgmlType::kF32, {8, 0}, 1), raw_tensor("w", GgmlType::kF32, {8}, 2)});
    write_bytes(tmp_.path("zero.gguf"), zero.bytes);
    auto z = GgufFile::open(tmp_.path("zero.gguf"));
    EXPECT_EQ(z->tensor("z").bytes, 0u);
    EXPECT_EQ(z->tensor("z").n_elements(), 0);
    EXPECT_EQ(z->tensor("w").bytes, 32u);
    // The base file of the malformed tests is valid.
    Built base = base_file();
    write_bytes(tmp_.path("base.gguf"), base.bytes);
    auto b = GgufFile::open(tmp_.path("base.gguf"));
    EXPECT_EQ(b->tensor("beta").offset, 32u);
    EXPECT_EQ(b->tensor("gamma").offset, 128u);
    EXPECT_EQ(b->file_size(), base.data_start + 160);
}

// ---------------------------------------------------------------------------------------------
// Malformed files.

class GgufMalformed : public ::testing::Test {
protected:
    std::string put(const std::string& name, const std::vector<uint8_t>& b) {
        const std::string p = tmp_.path(name);
        write_bytes(p, b);
        return p;
    }
    std::vector<uint8_t> cut(const std::vector<uint8_t>& b, size_t n) {
        return std::vector<uint8_t>(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(std::min(n, b.size())));
    }
    TempDir tmp_;
};

TEST_F(GgufMalformed, MissingFileAndDirectoryAreIoErrors) {
    EXPECT_TRUE(open_fails(tmp_.path("does-not-exist.gguf"), ErrorCode::kIo, {"cannot open", "No such file"}));
    EXPECT_TRUE(open_fails(tmp_.dir(), ErrorCode::kIo, {"not a regular file"}));
    EXPECT_TRUE(open_fails("/dev/null", ErrorCode::kIo, {"not a regular file"}));
}

TEST_F(GgufMalformed, BadMagic) {
    std::vector<uint8_t> b = base_file().bytes;
    for (const char* magic : {"GGUG", "GGML", "FUGG", "\x7f" "ELF"}) {
        std::memcpy(b.data(), magic, 4);
        EXPECT_TRUE(open_fails(put("magic.gguf", b), {"not a GGUF file", "magic at offset 0", "expected 'GGUF'"}));
    }
    EXPECT_TRUE(open_fails(put("empty.gguf", {}), {"only 0 bytes", "offset 0"}));
    EXPECT_TRUE(open_fails(put("three.gguf", {'G', 'G', 'U'}), {"only 3 bytes", "magic"}));
    EXPECT_TRUE(open_fails(put("text.gguf", {'h', 'e', 'l', 'l', 'o', '\n'}), {"magic at offset 0 is 'hell'"}));
}

TEST_F(GgufMalformed, UnsupportedVersion) {
    std::vector<uint8_t> b = base_file().bytes;
    for (uint32_t v : {0u, 1u, 4u, 0x03000000u, 0xffffffffu}) {
        patch<uint32_t>(b, 4, v);
        EXPECT_TRUE(open_fails(put("version.gguf", b), {"unsupported GGUF version " + std::to_string(v), "offset 4"}));
    }
}

TEST_F(GgufMalformed, ShorterThanTheHeader) {
    const std::vector<uint8_t> b = base_file().bytes;
    EXPECT_TRUE(open_fails(put("h6.gguf", cut(b, 6)), {"truncated at offset 4", "version"}));
    EXPECT_TRUE(open_fails(put("h8.gguf", cut(b, 8)), {"truncated at offset 8", "tensor count"}));
    EXPECT_TRUE(open_fails(put("h20.gguf", cut(b, 20)), {"truncated at offset 16", "metadata count"}));
    // The counts are read but there is nothing behind them.
    EXPECT_TRUE(open_fails(put("h24.gguf", cut(b, 24)), {"offset 8", "tensor count 3"}));
}

TEST_F(GgufMalformed, TruncatedInAKey) {
    const std::string key = "general.a.rather.long.key.name.for.truncation";
    Built f = build({{key, vu(ValueType::kU32, 1)}}, {});
    // Inside the key bytes.
    EXPECT_TRUE(open_fails(put("key.gguf", cut(f.bytes, f.kv[0].key + 8 + 20)),
                           {"string length " + std::to_string(key.size()), "offset 24", "metadata key"}));
    // Inside the key's length field (13 bytes are needed for a key/value pair at all).
    EXPECT_TRUE(open_fails(put("keylen.gguf", cut(f.bytes, 24 + 4)), {"metadata count 1", "offset 16"}));
    Built two = build({{key, vu(ValueType::kU32, 1)}, {"k2", vu(ValueType::kU8, 1)}}, {});
    EXPECT_TRUE(open_fails(put("keylen2.gguf", cut(two.bytes, two.kv[1].key + 5)),
                           {"truncated at offset " + std::to_string(two.kv[1].key), "metadata key"}));
    // Inside the value type.
    EXPECT_TRUE(open_fails(put("type.gguf", cut(two.bytes, two.kv[1].type + 2)),
                           {"truncated at offset " + std::to_string(two.kv[1].type), "metadata value type"}));
}

TEST_F(GgufMalformed, TruncatedInAValue) {
    Built f = build({{"k", vu(ValueType::kU64, 123456789)}}, {});
    EXPECT_TRUE(open_fails(put("u64.gguf", cut(f.bytes, f.kv[0].value + 4)),
                           {"truncated at offset " + std::to_string(f.kv[0].value), "u64 value"}));
    Built g = build({{"k", vf(ValueType::kF64, 1.0)}, {"k2", vf(ValueType::kF32, 2.0)}}, {});
    EXPECT_TRUE(open_fails(put("f32.gguf", cut(g.bytes, g.kv[1].value + 3)),
                           {"truncated at offset " + std::to_string(g.kv[1].value), "f32 value"}));
}

TEST_F(GgufMalformed, TruncatedInAString) {
    Built f = build({{"general.name", vs(std::string(100, 'n'))}}, {});
    EXPECT_TRUE(open_fails(put("str.gguf", cut(f.bytes, f.kv[0].value + 8 + 50)),
                           {"string length 100", "offset " + std::to_string(f.kv[0].value),
                            "string value of key 'general.name'"}));
    EXPECT_TRUE(open_fails(put("strlen.gguf", cut(f.bytes, f.kv[0].value + 3)),
                           {"truncated at offset " + std::to_string(f.kv[0].value), "general.name"}));
}

TEST_F(GgufMalformed, TruncatedInAnArray) {
    std::vector<Value> xs;
    for (int k = 0; k < 100; ++k) xs.push_back(vu(ValueType::kU32, k));
    Built f = build({{"tokenizer.ggml.token_type", varr(ValueType::kU32, xs)}}, {});
    EXPECT_TRUE(open_fails(put("arr.gguf", cut(f.bytes, f.kv[0].value + 12 + 200)),
                           {"array of key 'tokenizer.ggml.token_type' claims 100 elements of u32",
                            "offset " + std::to_string(f.kv[0].value)}));
    EXPECT_TRUE(open_fails(put("arrhdr.gguf", cut(f.bytes, f.kv[0].value + 6)),
                           {"truncated at offset " + std::to_string(f.kv[0].value + 4), "array length"}));
    std::vector<Value> strs;
    for (int k = 0; k < 50; ++k) strs.push_back(vs("token" + std::to_string(k)));
    Built s = build({{"tokenizer.ggml.tokens", varr(ValueType::kString, strs)}}, {});
    EXPECT_TRUE(open_fails(put("arrstr.gguf", cut(s.bytes, s.end_of_infos - 3)),
                           {"string value of key 'tokenizer.ggml.tokens'", "offset"}));
    // Nested: the inner array is cut.
    Built n = build({{"nested", varr(ValueType::kArray, {varr(ValueType::kI64, {vi(ValueType::kI64, 1), vi(ValueType::kI64, 2)})})}}, {});
    EXPECT_TRUE(open_fails(put("arrnest.gguf", cut(n.bytes, n.end_of_infos - 4)), {"key 'nested'", "offset"}));
}

TEST_F(GgufMalformed, TruncatedInTensorInfos) {
    Built f = base_file();
    const TensorAt& beta = f.ti[1];
    struct Cut {
        size_t at;
        std::string what;
    };
    const std::vector<Cut> cuts = {
        {beta.name + 4, "tensor name"},
        {beta.name + 8 + 2, "tensor name"},
        {beta.n_dims + 1, "tensor dimension count"},
        {beta.ne + 12, "tensor dimension"},
        {beta.type + 3, "tensor type"},
        {beta.offset + 7, "tensor data offset"},
    };
    for (const auto& c : cuts) {
        SCOPED_TRACE(c.what + " cut at " + std::to_string(c.at));
        EXPECT_TRUE(open_fails(put("ti.gguf", cut(f.bytes, c.at)), {"offset", c.what}));
    }
    // All infos present, data section missing entirely.
    EXPECT_TRUE(open_fails(put("nodata.gguf", cut(f.bytes, f.end_of_infos)),
                           {"tensor data would start at offset " + std::to_string(f.data_start)}));
}

TEST_F(GgufMalformed, TruncatedTensorData) {
    Built f = base_file();
    ASSERT_EQ(f.bytes.size(), f.data_start + 160);  // gamma ends the file
    for (size_t drop : {1, 5, 31, 32, 60}) {
        SCOPED_TRACE(drop);
        EXPECT_TRUE(open_fails(put("data.gguf", cut(f.bytes, f.bytes.size() - drop)),
                               {"tensor 'gamma'", "runs past the end of the file", "offset 128"}));
    }
    EXPECT_TRUE(open_fails(put("data2.gguf", cut(f.bytes, f.data_start + 90)), {"tensor 'beta'", "runs past the end"}));
}

TEST_F(GgufMalformed, TensorOffsetPastTheEnd) {
    for (uint64_t off : {uint64_t(1) << 40, uint64_t(192), UINT64_MAX - 31, uint64_t(1) << 63}) {
        SCOPED_TRACE(off);
        Built f = base_file();
        patch<uint64_t>(f.bytes, f.ti[1].offset, off);
        EXPECT_TRUE(open_fails(put("past.gguf", f.bytes), {"tensor 'beta'", "offset " + std::to_string(off), "past the end"}));
    }
}

TEST_F(GgufMalformed, OverlappingTensors) {
    Built f = base_file();
    patch<uint64_t>(f.bytes, f.ti[1].offset, 0);  // beta onto alpha
    EXPECT_TRUE(open_fails(put("overlap.gguf", f.bytes), {"'alpha'", "'beta'", "overlap"}));
    Built g = base_file();
    patch<uint64_t>(g.bytes, g.ti[2].offset, 64);  // gamma into beta's tail [32, 100)
    EXPECT_TRUE(open_fails(put("overlap2.gguf", g.bytes), {"'beta'", "'gamma'", "overlap"}));
    // An empty tensor between two overlapping ones must not hide the overlap.
    Built h = build({}, {raw_tensor("big", GgmlType::kF32, {32}, 1), raw_tensor("empty", GgmlType::kF32, {0}, 2),
                         raw_tensor("small", GgmlType::kF32, {8}, 3)});
    patch<uint64_t>(h.bytes, h.ti[1].offset, 32);
    patch<uint64_t>(h.bytes, h.ti[2].offset, 64);
    EXPECT_TRUE(open_fails(put("overlap3.gguf", h.bytes), {"'big'", "'small'", "overlap"}));
    // Three tensors where the first covers the third but not the second's start... sorted by offset.
    Built k = build({}, {raw_tensor("c", GgmlType::kF32, {8}, 1), raw_tensor("a", GgmlType::kF32, {64}, 2),
                         raw_tensor("b", GgmlType::kF32, {8}, 3)});
    patch<uint64_t>(k.bytes, k.ti[0].offset, 0);
    patch<uint64_t>(k.bytes, k.ti[1].offset, 64);
    patch<uint64_t>(k.bytes, k.ti[2].offset, 32);  // a = [64, 320), b = [32, 64), c = [0, 32): no overlap
    write_bytes(tmp_.path("nooverlap.gguf"), k.bytes);
    EXPECT_NO_THROW(GgufFile::open(tmp_.path("nooverlap.gguf")));
}

TEST_F(GgufMalformed, MisalignedOffset) {
    for (uint64_t off : {33, 48, 1}) {
        Built f = base_file();
        patch<uint64_t>(f.bytes, f.ti[1].offset, off);
        EXPECT_TRUE(open_fails(put("misaligned.gguf", f.bytes),
                               {"tensor 'beta'", "data offset " + std::to_string(off), "alignment 32",
                                "offset " + std::to_string(f.ti[1].offset)}));
    }
}

TEST_F(GgufMalformed, UnknownGgmlType) {
    for (uint32_t t : {77u, 4u, 5u, 31u, 0xffffffffu}) {
        Built f = base_file();
        patch<uint32_t>(f.bytes, f.ti[0].type, t);
        EXPECT_TRUE(open_fails(put("type.gguf", f.bytes), {"tensor 'alpha'", "unknown ggml type " + std::to_string(t),
                                                           "offset " + std::to_string(f.ti[0].type)}));
    }
}

TEST_F(GgufMalformed, ElementsNotAMultipleOfTheBlockSize) {
    RawTensor q8 = raw_tensor("blk.0.attn_q.weight", GgmlType::kQ8_0, {32, 2}, 1);
    q8.ne = {33, 2};
    EXPECT_TRUE(open_fails(put("q8.gguf", build({}, {q8}).bytes),
                           {"tensor 'blk.0.attn_q.weight'", "q8_0", "33 elements per row", "block size 32", "offset 24"}));
    RawTensor q4k = raw_tensor("q4k", GgmlType::kQ4_K, {256}, 1);
    q4k.ne = {128};
    EXPECT_TRUE(open_fails(put("q4k.gguf", build({}, {q4k}).bytes), {"tensor 'q4k'", "q4_K", "128", "block size 256"}));
}

TEST_F(GgufMalformed, DimensionCount) {
    for (uint32_t nd : {0u, 5u, 0xffffffffu}) {
        Built f = base_file();
        patch<uint32_t>(f.bytes, f.ti[2].n_dims, nd);
        EXPECT_TRUE(open_fails(put("dims.gguf", f.bytes), {"tensor 'gamma'", std::to_string(nd) + " dimensions",
                                                           "expected 1..4", "offset " + std::to_string(f.ti[2].name)}));
    }
    RawTensor five = raw_tensor("five", GgmlType::kF32, {1}, 1);
    five.ne = {1, 1, 1, 1, 1};
    EXPECT_TRUE(open_fails(put("five.gguf", build({}, {five}).bytes), {"tensor 'five'", "5 dimensions"}));
}

TEST_F(GgufMalformed, DimensionsThatOverflow) {
    RawTensor neg = raw_tensor("neg", GgmlType::kF32, {4}, 1);
    neg.ne = {uint64_t(1) << 63};
    EXPECT_TRUE(open_fails(put("neg.gguf", build({}, {neg}).bytes), {"tensor 'neg'", "overflows"}));
    RawTensor prod = raw_tensor("prod", GgmlType::kF32, {4}, 1);
    prod.ne = {uint64_t(1) << 32, uint64_t(1) << 32};
    EXPECT_TRUE(open_fails(put("prod.gguf", build({}, {prod}).bytes), {"tensor 'prod'", "overflows"}));
    // Elements fit in 63 bits but bytes do not: must not wrap to a small byte size.
    const std::vector<std::vector<uint64_t>> too_big = {{uint64_t(1) << 62}, {uint64_t(1) << 62, 0}, {uint64_t(1) << 61, 2}};
    for (const auto& ne : too_big) {
        RawTensor big = raw_tensor("big", GgmlType::kF32, {4}, 1);
        big.ne = ne;
        EXPECT_TRUE(open_fails(put("big.gguf", build({}, {big}).bytes), {"tensor 'big'", "overflows"}));
    }
    RawTensor q = raw_tensor("q", GgmlType::kQ6_K, {256}, 1);
    q.ne = {(uint64_t(1) << 62) / 256 * 256};
    EXPECT_TRUE(open_fails(put("q.gguf", build({}, {q}).bytes), {"tensor 'q'"}));
}

TEST_F(GgufMalformed, DuplicateKey) {
    Kvs kvs = base_kvs();
    kvs.push_back({"test.count", vu(ValueType::kU32, 4)});
    Built f = build(kvs, base_tensors());
    EXPECT_TRUE(open_fails(put("dupkey.gguf", f.bytes),
                           {"duplicate metadata key 'test.count'", "offset " + std::to_string(f.kv.back().key)}));
}

TEST_F(GgufMalformed, DuplicateTensorName) {
    std::vector<RawTensor> ts = base_tensors();
    ts[2].name = "alpha";
    Built f = build(base_kvs(), ts);
    EXPECT_TRUE(open_fails(put("duptensor.gguf", f.bytes),
                           {"duplicate tensor name 'alpha'", "offset " + std::to_string(f.ti[2].name)}));
}

TEST_F(GgufMalformed, TensorNameTooLong) {
    Built ok = build({}, {raw_tensor(std::string(63, 'n'), GgmlType::kF32, {1}, 1)});
    write_bytes(tmp_.path("name63.gguf"), ok.bytes);
    EXPECT_NO_THROW(GgufFile::open(tmp_.path("name63.gguf")));
    Built f = build({}, {raw_tensor(std::string(64, 'n'), GgmlType::kF32, {1}, 1)});
    EXPECT_TRUE(open_fails(put("name64.gguf", f.bytes), {"64 bytes, longer than 63", "offset 24"}));
}

// Counts and lengths that lie must be refused before anything is allocated for them, at once.
TEST_F(GgufMalformed, CountsThatLieFailFast) {
    struct Lie {
        std::string name;
        size_t at;
        std::vector<std::string> words;
    };
    Built f = base_file();
    const uint64_t huge[] = {uint64_t(1) << 62, UINT64_MAX, uint64_t(1) << 32, f.bytes.size()};
    const std::vector<Lie> lies = {
        {"tensor count", 8, {"tensor count", "offset 8"}},
        {"metadata count", 16, {"metadata count", "offset 16"}},
        {"key length", f.kv[1].key, {"metadata key", "offset " + std::to_string(f.kv[1].key)}},
        {"string length", f.kv[0].value, {"string value of key 'general.architecture'"}},
        {"array length", f.kv[3].value + 4, {"array of key 'test.list'", "offset " + std::to_string(f.kv[3].value)}},
        {"string array length", f.kv[4].value + 4, {"array of key 'test.names'"}},
        {"string in array", f.kv[4].value + 12, {"string value of key 'test.names'"}},
        {"tensor name length", f.ti[1].name, {"tensor name", "offset " + std::to_string(f.ti[1].name)}},
    };
    for (const auto& lie : lies) {
        for (uint64_t n : huge) {
            SCOPED_TRACE(lie.name + " = " + std::to_string(n));
            std::vector<uint8_t> b = f.bytes;
            patch<uint64_t>(b, lie.at, n);
            const auto t0 = std::chrono::steady_clock::now();
            EXPECT_TRUE(open_fails(put("lie.gguf", b), lie.words));
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            EXPECT_LT(s, 0.5);
        }
    }
    // Counts one too high: the parser runs into the next section or the end, and says so.
    for (size_t at : {size_t(8), size_t(16)}) {
        std::vector<uint8_t> b = f.bytes;
        patch<uint64_t>(b, at, peek<uint64_t>(b, at) + 1);
        EXPECT_TRUE(open_fails(put("plus1.gguf", b), {}));
    }
}

// An array count the file's bytes do cover, but which would make hundreds of bytes of Value per
// byte of file, is refused above a total of 2^24 elements (sparse file: no disk is used).
// String elements cost a std::string each (32 bytes; 8 in the file): a count past the budget is
// refused at once, before any is read.
TEST_F(GgufMalformed, MetadataElementBudget) {
    Built f = build({{"huge", varr(ValueType::kString, {})}}, {});
    const uint64_t n = (uint64_t(1) << 24) + 1;
    patch<uint64_t>(f.bytes, f.kv[0].value + 4, n);
    const std::string path = put("budget.gguf", f.bytes);
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(f.bytes.size() + 8 * n)), 0);  // sparse
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(open_fails(path, {"array of key 'huge'", std::to_string(n), "limit"}));
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
}

// A numeric array is kept as its file bytes: a 16 MiB file with one 2^24-element u8 array holds
// about 16 MiB of heap once open (it took ~1.5 GiB and 11 s when every element was a Value), and
// the elements read back right.
TEST_F(GgufMalformed, HugeNumericArrayCostsItsBytes) {
    const uint64_t n = uint64_t(1) << 24;
    Built f = build({{"huge", varr(ValueType::kU8, {vu(ValueType::kU8, 7)})}}, {});
    const size_t at = f.kv[0].value + 12;  // the one element
    patch<uint64_t>(f.bytes, f.kv[0].value + 4, n);
    std::vector<uint8_t> bytes(f.bytes.begin(), f.bytes.begin() + static_cast<std::ptrdiff_t>(at));
    for (uint64_t k = 0; k < n; ++k) bytes.push_back(static_cast<uint8_t>(k * 31));
    bytes.insert(bytes.end(), f.bytes.begin() + static_cast<std::ptrdiff_t>(at + 1), f.bytes.end());
    const std::string path = put("huge-u8.gguf", bytes);
    const size_t heap0 = mallinfo2().uordblks;
    const auto t0 = std::chrono::steady_clock::now();
    auto g = gguf::GgufFile::open(path);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const size_t heap = mallinfo2().uordblks - heap0;
    const Value& v = g->get("huge");
    ASSERT_EQ(v.size(), n);
    EXPECT_EQ(v.at(12345).u, static_cast<uint8_t>(12345 * 31));
    EXPECT_EQ(v.at(n - 1).u, static_cast<uint8_t>((n - 1) * 31));
    EXPECT_LT(heap, n + (4u << 20)) << "metadata heap " << heap << " bytes for a " << n << "-byte array";
    EXPECT_LT(secs, 2.0);
}

TEST_F(GgufMalformed, BoolValueTwo) {
    Built f = base_file();
    f.bytes[f.kv[2].value] = 2;
    EXPECT_TRUE(open_fails(put("bool.gguf", f.bytes), {"bool value of key 'test.flag' is 2", "expected 0 or 1",
                                                       "offset " + std::to_string(f.kv[2].value)}));
    Built g = build({{"bools", varr(ValueType::kBool, {vb(false), vb(true), vb(true)})}}, {});
    g.bytes[g.kv[0].value + 12 + 2] = 0xff;
    EXPECT_TRUE(open_fails(put("bools.gguf", g.bytes), {"bool value of key 'bools' is 255"}));
}

TEST_F(GgufMalformed, AlignmentNotAPowerOfTwo) {
    for (uint32_t al : {0u, 3u, 48u, 100u, 0x80000001u}) {
        Kvs kvs = base_kvs();
        kvs.push_back({"general.alignment", vu(ValueType::kU32, al)});
        Built f = build(kvs, base_tensors(), al && !(al & (al - 1)) ? al : 32);
        EXPECT_TRUE(open_fails(put("align.gguf", f.bytes), {"general.alignment is " + std::to_string(al), "power of two"}));
    }
    Kvs kvs = base_kvs();
    kvs.push_back({"general.alignment", vu(ValueType::kU64, 64)});
    EXPECT_TRUE(open_fails(put("align64.gguf", build(kvs, base_tensors()).bytes), {"general.alignment", "type u64", "u32"}));
}

TEST_F(GgufMalformed, UnknownValueType) {
    for (uint32_t t : {13u, 0xffffffffu}) {
        Built f = base_file();
        patch<uint32_t>(f.bytes, f.kv[1].type, t);
        EXPECT_TRUE(open_fails(put("vtype.gguf", f.bytes), {"key 'test.count'", "unknown value type " + std::to_string(t),
                                                            "offset " + std::to_string(f.kv[1].type)}));
    }
    Built g = base_file();
    patch<uint32_t>(g.bytes, g.kv[3].value, 13);  // element type of test.list
    EXPECT_TRUE(open_fails(put("etype.gguf", g.bytes), {"array of key 'test.list'", "unknown element type 13",
                                                        "offset " + std::to_string(g.kv[3].value)}));
}

TEST_F(GgufMalformed, ArraysNestedDeeperThanEight) {
    Built f = build({{"deep", nested(9, vu(ValueType::kU8, 1))}}, {});
    EXPECT_TRUE(open_fails(put("deep.gguf", f.bytes), {"nested deeper than 8", "key 'deep'", "offset"}));
    // 1000 levels: refused at level 9, no deep recursion.
    Raw r;
    r.pod<uint32_t>(kGgufMagic);
    r.pod<uint32_t>(3);
    r.pod<uint64_t>(0);
    r.pod<uint64_t>(1);
    r.str("deeper");
    r.pod<uint32_t>(9);
    for (int k = 0; k < 1000; ++k) {
        r.pod<uint32_t>(9);
        r.pod<uint64_t>(1);
    }
    EXPECT_TRUE(open_fails(put("deeper.gguf", r.b), {"nested deeper than 8", "key 'deeper'"}));
}

TEST_F(GgufMalformed, NamesFromTheFileStayOnOneLine) {
    Kvs kvs = base_kvs();
    kvs.push_back({"bad\nkey\x1b[31m", vu(ValueType::kU8, 1)});
    kvs.push_back({"bad\nkey\x1b[31m", vu(ValueType::kU8, 1)});
    EXPECT_TRUE(open_fails(put("ctl.gguf", build(kvs, {}).bytes), {"duplicate metadata key 'bad\\x0akey\\x1b[31m'"}));
    Kvs longk = base_kvs();
    longk.push_back({std::string(100000, 'k'), vu(ValueType::kU8, 1)});
    longk.push_back({std::string(100000, 'k'), vu(ValueType::kU8, 1)});
    try {
        GgufFile::open(put("longkey.gguf", build(longk, {}).bytes));
        ADD_FAILURE() << "duplicate long key accepted";
    } catch (const Error& e) {
        EXPECT_LT(std::strlen(e.what()), 400u) << "a 100 kB key is cut in the message";
    }
}

}  // namespace
}  // namespace pipelm
