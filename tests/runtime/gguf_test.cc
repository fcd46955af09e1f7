// GGUF reader/writer tests: round trips of every metadata type and tensor type, versions 2 and 3,
// custom alignment; every malformed-file case must raise pipelm::Error{kFormat} (kIo for a path
// that cannot be read) with a one-line message naming the file and the field, offset or tensor;
// model-level checks of Glm4Config::from_gguf; and a deterministic fuzz loop over the header.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <typeinfo>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/ggml_types.h"
#include "runtime/gguf/gguf.h"
#include "runtime/gguf/gguf_writer.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/mkmodel.h"

namespace pipelm {
namespace {

using gguf::GgufFile;
using gguf::GgufWriter;
using gguf::TensorInfo;
using gguf::Value;
using gguf::ValueType;

constexpr uint32_t kGgufMagic = 0x46554747u;

// ---------------------------------------------------------------------------------------------
// Helpers: temp dirs, files, values.

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/pipelm-gguf-test-XXXXXX";
        const char* p = ::mkdtemp(tmpl);
        if (!p) throw std::runtime_error("mkdtemp failed");
        dir_ = p;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string path(const std::string& name) const { return dir_ + "/" + name; }
    const std::string& dir() const { return dir_; }

private:
    std::string dir_;
};

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!f) throw std::runtime_error("cannot write " + path);
}

template <typename T>
void patch(std::vector<uint8_t>& b, size_t at, T v) {
    ASSERT_LE(at + sizeof(T), b.size());
    std::memcpy(b.data() + at, &v, sizeof(T));
}

template <typename T>
T peek(const std::vector<uint8_t>& b, size_t at) {
    T v{};
    if (at + sizeof(T) <= b.size()) std::memcpy(&v, b.data() + at, sizeof(T));
    return v;
}

Value vu(ValueType t, uint64_t u) {
    Value v;
    v.type = t;
    v.u = u;
    return v;
}
Value vi(ValueType t, int64_t i) {
    Value v;
    v.type = t;
    v.i = i;
    return v;
}
Value vf(ValueType t, double f) {
    Value v;
    v.type = t;
    v.f = f;
    return v;
}
Value vb(bool b) { return vu(ValueType::kBool, b ? 1 : 0); }
Value vs(const std::string& s) { return GgufWriter::make_string(s); }
Value varr(ValueType elem, std::vector<Value> xs) {
    Value v;
    v.type = ValueType::kArray;
    v.elem_type = elem;
    v.arr = std::move(xs);
    return v;
}
Value nested(int levels, Value leaf) {  // `levels` arrays around an array of one leaf
    Value v = varr(leaf.type, {leaf});
    for (int k = 1; k < levels; ++k) v = varr(ValueType::kArray, {v});
    return v;
}

bool is_unsigned(ValueType t) {
    return t == ValueType::kU8 || t == ValueType::kU16 || t == ValueType::kU32 || t == ValueType::kU64 ||
           t == ValueType::kBool;
}
bool is_signed(ValueType t) {
    return t == ValueType::kI8 || t == ValueType::kI16 || t == ValueType::kI32 || t == ValueType::kI64;
}

// Deep equality of a written and a read value (floats bit-exact at their stored width).
::testing::AssertionResult same_value(const Value& want, const Value& got, const std::string& where) {
    if (want.type != got.type)
        return ::testing::AssertionFailure() << where << ": type " << gguf::value_type_name(got.type) << ", want "
                                             << gguf::value_type_name(want.type);
    const ValueType t = want.type;
    if (is_unsigned(t) && want.u != got.u)
        return ::testing::AssertionFailure() << where << ": " << got.u << " != " << want.u;
    if (is_signed(t) && want.i != got.i)
        return ::testing::AssertionFailure() << where << ": " << got.i << " != " << want.i;
    if (t == ValueType::kF32) {
        const float a = static_cast<float>(want.f), b = static_cast<float>(got.f);
        if (std::memcmp(&a, &b, 4) != 0) return ::testing::AssertionFailure() << where << ": " << b << " != " << a;
    }
    if (t == ValueType::kF64 && std::memcmp(&want.f, &got.f, 8) != 0)
        return ::testing::AssertionFailure() << where << ": " << got.f << " != " << want.f;
    if (t == ValueType::kString && want.s != got.s)
        return ::testing::AssertionFailure() << where << ": '" << got.s << "' != '" << want.s << "'";
    if (t == ValueType::kArray) {
        if (want.elem_type != got.elem_type)
            return ::testing::AssertionFailure() << where << ": element type " << gguf::value_type_name(got.elem_type)
                                                 << ", want " << gguf::value_type_name(want.elem_type);
        if (want.arr.size() != got.arr.size())
            return ::testing::AssertionFailure() << where << ": " << got.arr.size() << " elements, want "
                                                 << want.arr.size();
        for (size_t k = 0; k < want.arr.size(); ++k) {
            auto r = same_value(want.arr[k], got.arr[k], where + "[" + std::to_string(k) + "]");
            if (!r) return r;
        }
    }
    return ::testing::AssertionSuccess();
}

// Opening `path` must throw pipelm::Error with `code`, a one-line message naming the file and
// containing every word in `words`.
::testing::AssertionResult open_fails(const std::string& path, ErrorCode code, const std::vector<std::string>& words) {
    std::string msg;
    ErrorCode got{};
    try {
        auto f = GgufFile::open(path);
        return ::testing::AssertionFailure() << path << " opened without an error";
    } catch (const Error& e) {
        msg = e.what();
        got = e.code();
    } catch (const std::exception& e) {
        return ::testing::AssertionFailure() << "threw a non-pipelm exception: " << e.what();
    }
    if (got != code)
        return ::testing::AssertionFailure() << "code " << error_code_name(got) << ", want " << error_code_name(code)
                                             << ": " << msg;
    if (msg.find(path) == std::string::npos)
        return ::testing::AssertionFailure() << "message does not name the file: " << msg;
    if (msg.find('\n') != std::string::npos || msg.find('\r') != std::string::npos)
        return ::testing::AssertionFailure() << "message is not one line: " << msg;
    for (const auto& w : words)
        if (msg.find(w) == std::string::npos)
            return ::testing::AssertionFailure() << "message lacks '" << w << "': " << msg;
    return ::testing::AssertionSuccess() << msg;
}

::testing::AssertionResult open_fails(const std::string& path, const std::vector<std::string>& words) {
    return open_fails(path, ErrorCode::kFormat, words);
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    uint32_t s = seed * 2654435761u + 12345u;
    for (auto& x : v) {
        s = s * 1664525u + 1013904223u;
        x = static_cast<uint8_t>(s >> 24);
    }
    return v;
}

uint64_t natural_bytes(GgmlType t, const std::vector<int64_t>& ne) {
    uint64_t rows = 1;
    for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
    return ggml_row_bytes(t, ne[0]) * rows;
}

// ---------------------------------------------------------------------------------------------
// An encoder independent of GgufWriter (written from the spec, §7.1), which records where every
// field lands so that tests can patch or cut precisely. It writes whatever it is told, valid or not.

struct RawTensor {
    std::string name;
    uint32_t type = 0;
    std::vector<uint64_t> ne;
    std::vector<uint8_t> data;
    uint64_t offset = UINT64_MAX;  // UINT64_MAX: next aligned position after the previous tensor
};

struct KvAt {
    size_t key = 0, type = 0, value = 0;
};
struct TensorAt {
    size_t name = 0, n_dims = 0, ne = 0, type = 0, offset = 0;
};

struct Built {
    std::vector<uint8_t> bytes;
    std::vector<KvAt> kv;
    std::vector<TensorAt> ti;
    size_t end_of_infos = 0;
    size_t data_start = 0;
    std::vector<uint64_t> offsets;  // data offset of each tensor, relative to data_start
};

class Raw {
public:
    std::vector<uint8_t> b;
    size_t put(const void* p, size_t n) {
        const size_t at = b.size();
        b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
        return at;
    }
    template <typename T>
    size_t pod(T v) {
        return put(&v, sizeof(T));
    }
    size_t str(const std::string& s) {
        const size_t at = pod<uint64_t>(s.size());
        put(s.data(), s.size());
        return at;
    }
    size_t value(const Value& v) {
        const size_t at = b.size();
        switch (v.type) {
            case ValueType::kU8: pod<uint8_t>(static_cast<uint8_t>(v.u)); break;
            case ValueType::kI8: pod<int8_t>(static_cast<int8_t>(v.i)); break;
            case ValueType::kU16: pod<uint16_t>(static_cast<uint16_t>(v.u)); break;
            case ValueType::kI16: pod<int16_t>(static_cast<int16_t>(v.i)); break;
            case ValueType::kU32: pod<uint32_t>(static_cast<uint32_t>(v.u)); break;
            case ValueType::kI32: pod<int32_t>(static_cast<int32_t>(v.i)); break;
            case ValueType::kU64: pod<uint64_t>(v.u); break;
            case ValueType::kI64: pod<int64_t>(v.i); break;
            case ValueType::kF32: pod<float>(static_cast<float>(v.f)); break;
            case ValueType::kF64: pod<double>(v.f); break;
            case ValueType::kBool: pod<uint8_t>(static_cast<uint8_t>(v.u)); break;
            case ValueType::kString: str(v.s); break;
            case ValueType::kArray:
                pod<uint32_t>(static_cast<uint32_t>(v.elem_type));
                pod<uint64_t>(v.arr.size());
                for (const auto& e : v.arr) value(e);
                break;
        }
        return at;
    }
    void pad(uint64_t align) {
        while (b.size() % align) b.push_back(0);
    }
};

using Kvs = std::vector<std::pair<std::string, Value>>;

Built build(const Kvs& kvs, const std::vector<RawTensor>& ts, uint64_t align = 32, uint32_t version = 3) {
    Built out;
    Raw r;
    r.pod<uint32_t>(kGgufMagic);
    r.pod<uint32_t>(version);
    r.pod<uint64_t>(ts.size());
    r.pod<uint64_t>(kvs.size());
    for (const auto& kv : kvs) {
        KvAt at;
        at.key = r.str(kv.first);
        at.type = r.pod<uint32_t>(static_cast<uint32_t>(kv.second.type));
        at.value = r.value(kv.second);
        out.kv.push_back(at);
    }
    uint64_t next = 0;
    for (const auto& t : ts) {
        const uint64_t off = t.offset == UINT64_MAX ? next : t.offset;
        out.offsets.push_back(off);
        next = (std::max(next, off + t.data.size()) + align - 1) / align * align;
        TensorAt at;
        at.name = r.str(t.name);
        at.n_dims = r.pod<uint32_t>(static_cast<uint32_t>(t.ne.size()));
        at.ne = r.b.size();
        for (uint64_t d : t.ne) r.pod<uint64_t>(d);
        at.type = r.pod<uint32_t>(t.type);
        at.offset = r.pod<uint64_t>(off);
        out.ti.push_back(at);
    }
    out.end_of_infos = r.b.size();
    r.pad(align);
    out.data_start = r.b.size();
    uint64_t data_end = 0;
    for (size_t k = 0; k < ts.size(); ++k) data_end = std::max<uint64_t>(data_end, out.offsets[k] + ts[k].data.size());
    data_end = (data_end + align - 1) / align * align;
    r.b.resize(out.data_start + data_end, 0);
    for (size_t k = 0; k < ts.size(); ++k)
        if (!ts[k].data.empty()) std::memcpy(r.b.data() + out.data_start + out.offsets[k], ts[k].data.data(), ts[k].data.size());
    out.bytes = std::move(r.b);
    return out;
}

RawTensor raw_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne, uint32_t seed) {
    RawTensor t;
    t.name = name;
    t.type = static_cast<uint32_t>(type);
    for (int64_t d : ne) t.ne.push_back(static_cast<uint64_t>(d));
    t.data = pattern(natural_bytes(type, ne), seed);
    return t;
}

// The base valid file of the malformed tests: 5 keys, 3 tensors (alpha f32 [0,32), beta q8_0
// [32,100), gamma f16 [128,160)).
Kvs base_kvs() {
    return {
        {"general.architecture", vs("test")},
        {"test.count", vu(ValueType::kU32, 3)},
        {"test.flag", vb(true)},
        {"test.list", varr(ValueType::kI32, {vi(ValueType::kI32, 1), vi(ValueType::kI32, 2), vi(ValueType::kI32, 3)})},
        {"test.names", varr(ValueType::kString, {vs("ab"), vs("c")})},
    };
}
std::vector<RawTensor> base_tensors() {
    return {raw_tensor("alpha", GgmlType::kF32, {4, 2}, 1), raw_tensor("beta", GgmlType::kQ8_0, {32, 2}, 2),
            raw_tensor("gamma", GgmlType::kF16, {16}, 3)};
}
Built base_file() { return build(base_kvs(), base_tensors()); }

// ---------------------------------------------------------------------------------------------
// Round trips (writer -> reader).

class GgufRoundTrip : public ::testing::Test {
protected:
    TempDir tmp_;
};

Kvs all_scalar_kvs() {
    return {
        {"s.u8", vu(ValueType::kU8, 0xfe)},
        {"s.i8", vi(ValueType::kI8, -128)},
        {"s.u16", vu(ValueType::kU16, 0xfedc)},
        {"s.i16", vi(ValueType::kI16, -32768)},
        {"s.u32", vu(ValueType::kU32, 0xfedcba98u)},
        {"s.i32", vi(ValueType::kI32, std::numeric_limits<int32_t>::min())},
        {"s.f32", vf(ValueType::kF32, -3.25)},
        {"s.f32.tiny", vf(ValueType::kF32, static_cast<double>(std::numeric_limits<float>::denorm_min()))},
        {"s.f32.inf", vf(ValueType::kF32, std::numeric_limits<double>::infinity())},
        {"s.bool.true", vb(true)},
        {"s.bool.false", vb(false)},
        {"s.string", vs("GLM-4 \xe6\xa8\xa1\xe5\x9e\x8b")},
        {"s.string.empty", vs("")},
        {"s.string.nul", vs(std::string("a\0b", 3))},
        {"s.u64", vu(ValueType::kU64, std::numeric_limits<uint64_t>::max())},
        {"s.i64", vi(ValueType::kI64, std::numeric_limits<int64_t>::min())},
        {"s.f64", vf(ValueType::kF64, 0.1)},
        {"s.f64.neg0", vf(ValueType::kF64, -0.0)},
    };
}

Kvs all_array_kvs() {
    Kvs kvs;
    kvs.push_back({"a.u8", varr(ValueType::kU8, {vu(ValueType::kU8, 0), vu(ValueType::kU8, 255), vu(ValueType::kU8, 7)})});
    kvs.push_back({"a.i8", varr(ValueType::kI8, {vi(ValueType::kI8, -1), vi(ValueType::kI8, 127)})});
    kvs.push_back({"a.u16", varr(ValueType::kU16, {vu(ValueType::kU16, 65535), vu(ValueType::kU16, 1)})});
    kvs.push_back({"a.i16", varr(ValueType::kI16, {vi(ValueType::kI16, -300), vi(ValueType::kI16, 300)})});
    kvs.push_back({"a.u32", varr(ValueType::kU32, {vu(ValueType::kU32, 4000000000u)})});
    kvs.push_back({"a.i32", varr(ValueType::kI32, {vi(ValueType::kI32, -5), vi(ValueType::kI32, 151552)})});
    kvs.push_back({"a.f32", varr(ValueType::kF32, {vf(ValueType::kF32, 1.5), vf(ValueType::kF32, -0.0)})});
    kvs.push_back({"a.bool", varr(ValueType::kBool, {vb(true), vb(false), vb(true)})});
    kvs.push_back({"a.string", varr(ValueType::kString, {vs("<|user|>"), vs(""), vs("\xc4\xa0the"), vs(std::string(300, 'x'))})});
    kvs.push_back({"a.u64", varr(ValueType::kU64, {vu(ValueType::kU64, 1ull << 63), vu(ValueType::kU64, 0)})});
    kvs.push_back({"a.i64", varr(ValueType::kI64, {vi(ValueType::kI64, -(1ll << 62)), vi(ValueType::kI64, 42)})});
    kvs.push_back({"a.f64", varr(ValueType::kF64, {vf(ValueType::kF64, 1e300), vf(ValueType::kF64, -2.5e-300)})});
    kvs.push_back({"a.empty", varr(ValueType::kI32, {})});
    kvs.push_back({"a.empty.string", varr(ValueType::kString, {})});
    kvs.push_back({"a.nested.i32",
                   varr(ValueType::kArray, {varr(ValueType::kI32, {vi(ValueType::kI32, 1), vi(ValueType::kI32, 2)}),
                                            varr(ValueType::kI32, {}), varr(ValueType::kI32, {vi(ValueType::kI32, 3)})})});
    kvs.push_back({"a.nested.string", varr(ValueType::kArray, {varr(ValueType::kString, {vs("x"), vs("yz")}),
                                                               varr(ValueType::kString, {vs("")})})});
    kvs.push_back({"a.nested.mixed", varr(ValueType::kArray, {varr(ValueType::kF64, {vf(ValueType::kF64, 2.0)}),
                                                              varr(ValueType::kBool, {vb(false)})})});
    kvs.push_back({"a.nested.8", nested(8, vu(ValueType::kU16, 9))});  // the deepest allowed
    return kvs;
}

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
    const Value* v = &deep;
    int levels = 0;
    while (v->type == ValueType::kArray) {
        ++levels;
        ASSERT_EQ(v->arr.size(), 1u);
        v = &v->arr[0];
    }
    EXPECT_EQ(levels, 8);
    EXPECT_EQ(v->type, ValueType::kU16);
    EXPECT_EQ(v->u, 9u);
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
TEST_F(GgufMalformed, MetadataElementBudget) {
    Built f = build({{"huge", varr(ValueType::kU8, {})}}, {});
    const uint64_t n = (uint64_t(1) << 24) + 1;
    patch<uint64_t>(f.bytes, f.kv[0].value + 4, n);
    const std::string path = put("budget.gguf", f.bytes);
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(f.bytes.size() + n)), 0);
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(open_fails(path, {"array of key 'huge'", std::to_string(n), "limit"}));
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
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

// ---------------------------------------------------------------------------------------------
// Model level: Glm4Config::from_gguf on a small GLM-4 written by mkmodel.

model::MkModelSpec tiny_spec() {
    model::MkModelSpec s;
    s.n_layer = 2;
    s.n_embd = 32;
    s.n_head = 2;
    s.n_head_kv = 1;
    s.head_dim = 16;
    s.n_rot = 8;
    s.n_ff = 64;
    s.n_vocab = 300;
    s.n_ctx = 256;
    s.dtype = GgmlType::kF32;
    return s;
}

struct Editable {
    Kvs kvs;
    struct T {
        std::string name;
        GgmlType type;
        std::vector<int64_t> ne;
        const uint8_t* data;
        uint64_t bytes;
    };
    std::vector<T> tensors;
    void drop_key(const std::string& k) {
        kvs.erase(std::remove_if(kvs.begin(), kvs.end(), [&](const auto& kv) { return kv.first == k; }), kvs.end());
    }
    void set(const std::string& k, Value v) {
        for (auto& kv : kvs)
            if (kv.first == k) kv.second = std::move(v);
    }
    void drop_tensor(const std::string& n) {
        tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [&](const T& t) { return t.name == n; }),
                      tensors.end());
    }
    T& tensor(const std::string& n) {
        for (auto& t : tensors)
            if (t.name == n) return t;
        throw std::runtime_error("no tensor " + n);
    }
};

// Reads `src`, lets `edit` change keys and tensors, writes `dst` with the writer.
void rewrite(const std::string& src, const std::string& dst, const std::function<void(Editable&)>& edit) {
    auto f = GgufFile::open(src);
    Editable e;
    e.kvs = f->metadata();
    for (const auto& t : f->tensors()) e.tensors.push_back({t.name, t.type, t.ne, t.data, t.bytes});
    edit(e);
    GgufWriter w(static_cast<uint32_t>(f->alignment()));
    for (const auto& kv : e.kvs) w.set(kv.first, kv.second);
    for (const auto& t : e.tensors) {
        ASSERT_EQ(natural_bytes(t.type, t.ne), t.bytes) << t.name << ": an edit must keep the byte size";
        const uint8_t* data = t.data;
        const uint64_t bytes = t.bytes;
        w.add_tensor(t.name, t.type, t.ne, [data, bytes](uint8_t* dst_) { std::memcpy(dst_, data, bytes); });
    }
    w.write(dst);
}

class Glm4FromGguf : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new TempDir();
        model_ = dir_->path("glm4-small.gguf");
        model::mkmodel_write(tiny_spec(), model_, 1);
    }
    static void TearDownTestSuite() {
        delete dir_;
        dir_ = nullptr;
    }
    // from_gguf on an edited copy must throw `code` naming the file and every word.
    ::testing::AssertionResult config_fails(const std::string& name, const std::function<void(Editable&)>& edit,
                                            ErrorCode code, const std::vector<std::string>& words) {
        const std::string path = dir_->path(name);
        rewrite(model_, path, edit);
        auto f = GgufFile::open(path);
        try {
            model::Glm4Config::from_gguf(*f);
            return ::testing::AssertionFailure() << name << ": from_gguf accepted the file";
        } catch (const Error& e) {
            const std::string m = e.what();
            if (e.code() != code)
                return ::testing::AssertionFailure() << "code " << error_code_name(e.code()) << ": " << m;
            if (m.find(path) == std::string::npos) return ::testing::AssertionFailure() << "no file name: " << m;
            if (m.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "not one line: " << m;
            for (const auto& w : words)
                if (m.find(w) == std::string::npos) return ::testing::AssertionFailure() << "lacks '" << w << "': " << m;
            return ::testing::AssertionSuccess();
        }
    }
    static TempDir* dir_;
    static std::string model_;
};
TempDir* Glm4FromGguf::dir_ = nullptr;
std::string Glm4FromGguf::model_;

TEST_F(Glm4FromGguf, ValidModelLoads) {
    auto f = GgufFile::open(model_);
    const model::Glm4Config c = model::Glm4Config::from_gguf(*f);
    EXPECT_EQ(c.arch, "glm4");
    EXPECT_EQ(c.n_layer, 2);
    EXPECT_EQ(c.n_embd, 32);
    EXPECT_EQ(c.n_head, 2);
    EXPECT_EQ(c.n_head_kv, 1);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.n_rot, 8);
    EXPECT_EQ(c.n_ff, 64);
    EXPECT_EQ(c.n_vocab, 300);
    EXPECT_TRUE(c.qkv_bias);
    EXPECT_FALSE(c.tied_output);
    // The rewrite helper itself is faithful.
    const std::string copy = dir_->path("copy.gguf");
    rewrite(model_, copy, [](Editable&) {});
    EXPECT_EQ(read_bytes(copy), read_bytes(model_));
}

TEST_F(Glm4FromGguf, MissingHyperparameter) {
    EXPECT_TRUE(config_fails("no-block-count.gguf", [](Editable& e) { e.drop_key("glm4.block_count"); },
                             ErrorCode::kFormat, {"missing metadata key 'glm4.block_count'"}));
    EXPECT_TRUE(config_fails("no-arch.gguf", [](Editable& e) { e.drop_key("general.architecture"); },
                             ErrorCode::kFormat, {"general.architecture"}));
    EXPECT_TRUE(config_fails("no-eps.gguf", [](Editable& e) { e.drop_key("glm4.attention.layer_norm_rms_epsilon"); },
                             ErrorCode::kFormat, {"layer_norm_rms_epsilon"}));
}

TEST_F(Glm4FromGguf, BadHyperparameters) {
    EXPECT_TRUE(config_fails("zero-layers.gguf", [](Editable& e) { e.set("glm4.block_count", vu(ValueType::kU32, 0)); },
                             ErrorCode::kFormat, {"glm4.block_count", "out of range"}));
    EXPECT_TRUE(config_fails("string-layers.gguf", [](Editable& e) { e.set("glm4.block_count", vs("2")); },
                             ErrorCode::kFormat, {"glm4.block_count", "expected an integer"}));
    EXPECT_TRUE(config_fails("heads.gguf", [](Editable& e) { e.set("glm4.attention.head_count_kv", vu(ValueType::kU32, 3)); },
                             ErrorCode::kFormat, {"head_count 2", "head_count_kv 3"}));
    EXPECT_TRUE(config_fails("rope.gguf", [](Editable& e) { e.set("glm4.rope.dimension_count", vu(ValueType::kU32, 7)); },
                             ErrorCode::kFormat, {"rope.dimension_count 7"}));
}

TEST_F(Glm4FromGguf, UnknownArchitectureListsTheKnownOnes) {
    EXPECT_TRUE(config_fails("llama7.gguf", [](Editable& e) { e.set("general.architecture", vs("llama7")); },
                             ErrorCode::kUnsupported, {"unknown architecture 'llama7'", "glm4"}));
}

TEST_F(Glm4FromGguf, TensorShapeDisagreesWithHyperparameters) {
    EXPECT_TRUE(config_fails("shape.gguf",
                             [](Editable& e) {
                                 auto& t = e.tensor("blk.1.attn_k.weight");
                                 std::swap(t.ne[0], t.ne[1]);
                             },
                             ErrorCode::kFormat, {"tensor 'blk.1.attn_k.weight'", "shape {16, 32}", "require {32, 16}"}));
    EXPECT_TRUE(config_fails("hyper.gguf", [](Editable& e) { e.set("glm4.feed_forward_length", vu(ValueType::kU32, 96)); },
                             ErrorCode::kFormat, {"blk.0.ffn_up.weight", "{32, 128}", "{32, 192}"}));
}

TEST_F(Glm4FromGguf, MissingTensor) {
    EXPECT_TRUE(config_fails("no-norm.gguf", [](Editable& e) { e.drop_tensor("blk.1.ffn_norm.weight"); },
                             ErrorCode::kFormat, {"missing tensor 'blk.1.ffn_norm.weight'"}));
    EXPECT_TRUE(config_fails("no-embd.gguf", [](Editable& e) { e.drop_tensor("token_embd.weight"); },
                             ErrorCode::kFormat, {"missing tensor 'token_embd.weight'"}));
}

// The checked-in glm4-tiny with one tensor's dims swapped in place (same byte size).
TEST_F(Glm4FromGguf, PatchedTestModelShape) {
    const std::string src = std::string(PIPELM_TEST_DATA) + "/models/glm4-tiny/model.gguf";
    if (!std::filesystem::exists(src)) GTEST_SKIP() << src << " not present";
    std::vector<uint8_t> b = read_bytes(src);
    {
        auto f = GgufFile::open(src);
        const auto c = model::Glm4Config::from_gguf(*f);
        EXPECT_EQ(c.n_layer, 61);
        ASSERT_NE(c.n_embd, c.n_ff);
    }
    const std::string name = "blk.7.ffn_down.weight";
    std::string needle(8, '\0');
    const uint64_t len = name.size();
    std::memcpy(&needle[0], &len, 8);
    needle += name;
    const std::string hay(b.begin(), b.end());
    const size_t at = hay.find(needle);
    ASSERT_NE(at, std::string::npos);
    const size_t ne = at + needle.size() + 4;
    ASSERT_EQ(peek<uint32_t>(b, at + needle.size()), 2u);
    const uint64_t n0 = peek<uint64_t>(b, ne), n1 = peek<uint64_t>(b, ne + 8);
    patch<uint64_t>(b, ne, n1);
    patch<uint64_t>(b, ne + 8, n0);
    const std::string path = dir_->path("tiny-patched.gguf");
    write_bytes(path, b);
    auto f = GgufFile::open(path);  // still a valid GGUF
    try {
        model::Glm4Config::from_gguf(*f);
        ADD_FAILURE() << "shape mismatch accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kFormat);
        const std::string m = e.what();
        EXPECT_NE(m.find(path), std::string::npos) << m;
        EXPECT_NE(m.find("'" + name + "'"), std::string::npos) << m;
        EXPECT_NE(m.find("{" + std::to_string(n1) + ", " + std::to_string(n0) + "}"), std::string::npos) << m;
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic fuzz: mutate the header region or truncate a small valid GLM-4 GGUF; opening it
// and reading its config must succeed or throw pipelm::Error, nothing else.

struct Field {
    size_t at;
    int width;
};

// Positions of every count, length, type id, dimension and offset of a valid file.
std::vector<Field> structural_fields(const std::vector<uint8_t>& b) {
    std::vector<Field> out;
    size_t p = 8;
    auto u32 = [&](bool record) {
        if (record) out.push_back({p, 4});
        const uint32_t v = peek<uint32_t>(b, p);
        p += 4;
        return v;
    };
    auto u64 = [&](bool record) {
        if (record) out.push_back({p, 8});
        const uint64_t v = peek<uint64_t>(b, p);
        p += 8;
        return v;
    };
    const uint64_t n_t = u64(true), n_kv = u64(true);
    std::function<void(uint32_t)> value = [&](uint32_t t) {
        switch (static_cast<ValueType>(t)) {
            case ValueType::kU8: case ValueType::kI8: p += 1; break;
            case ValueType::kBool: out.push_back({p, 1}); p += 1; break;
            case ValueType::kU16: case ValueType::kI16: p += 2; break;
            case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: p += 4; break;
            case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: p += 8; break;
            case ValueType::kString: p += u64(true); break;
            case ValueType::kArray: {
                const uint32_t et = u32(true);
                const uint64_t n = u64(true);
                for (uint64_t k = 0; k < n; ++k) value(et);
                break;
            }
        }
    };
    for (uint64_t k = 0; k < n_kv; ++k) {
        p += u64(true);
        value(u32(true));
    }
    for (uint64_t k = 0; k < n_t; ++k) {
        p += u64(true);
        const uint32_t nd = u32(true);
        for (uint32_t d = 0; d < nd; ++d) u64(true);
        u32(true);
        u64(true);
    }
    return out;
}

class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    uint64_t next() {
        uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return n ? next() % n : 0; }

private:
    uint64_t s_;
};

TEST(GgufFuzz, HeaderMutationsAndTruncations) {
    TempDir tmp;
    const std::string path = tmp.path("fuzz.gguf");
    model::mkmodel_write(tiny_spec(), path, 1);
    const std::vector<uint8_t> orig = read_bytes(path);
    uint64_t header_end = 0;
    {
        auto f = GgufFile::open(path);
        model::Glm4Config::from_gguf(*f);
        header_end = f->data_offset();
    }
    const std::vector<Field> fields = structural_fields(orig);
    ASSERT_GT(fields.size(), 100u);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto pwrite_all = [&](const uint8_t* p, size_t n, size_t at) {
        while (n) {
            const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(at));
            ASSERT_GT(w, 0);
            p += w;
            n -= static_cast<size_t>(w);
            at += static_cast<size_t>(w);
        }
    };
    const uint64_t interesting[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 31, 32, 33, 63, 64, 77, 255, 256,
                                    0x7fffffff, 0xffffffff, uint64_t(1) << 32, uint64_t(1) << 62,
                                    uint64_t(1) << 63, UINT64_MAX, UINT64_MAX - 31, orig.size(), header_end};
    Rng rng(20240611);
    const int iterations = 3000;
    int opened = 0, rejected = 0, config_ok = 0;
    std::map<std::string, int> by_code;
    const auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < iterations; ++it) {
        std::vector<size_t> touched;  // positions overwritten (restored after)
        size_t truncated_to = orig.size();
        const uint64_t op = rng.below(10);
        auto set_bytes = [&](size_t at, const void* p, size_t n) {
            if (at >= orig.size()) return;
            n = std::min(n, orig.size() - at);
            for (size_t k = 0; k < n; ++k) touched.push_back(at + k);
            pwrite_all(static_cast<const uint8_t*>(p), n, at);
        };
        if (op < 4) {  // a structural field gets an interesting or nearby value
            const int n = 1 + static_cast<int>(rng.below(2));
            for (int k = 0; k < n; ++k) {
                const Field& fl = fields[rng.below(fields.size())];
                uint64_t v = 0;
                std::memcpy(&v, orig.data() + fl.at, static_cast<size_t>(fl.width));
                const uint64_t pick = rng.below(4);
                if (pick == 0) v = interesting[rng.below(sizeof(interesting) / sizeof(interesting[0]))];
                else if (pick == 1) v += 1;
                else if (pick == 2) v -= 1;
                else v ^= uint64_t(1) << rng.below(static_cast<uint64_t>(fl.width) * 8);
                set_bytes(fl.at, &v, static_cast<size_t>(fl.width));
            }
        }
        if (op >= 4 && op < 7) {  // random bytes in the header
            const int n = 1 + static_cast<int>(rng.below(8));
            for (int k = 0; k < n; ++k) {
                const size_t at = rng.below(header_end);
                uint8_t v = orig[at];
                if (rng.below(2)) v ^= static_cast<uint8_t>(1u << rng.below(8));
                else v = static_cast<uint8_t>(rng.next());
                set_bytes(at, &v, 1);
            }
        }
        if (op >= 7) {  // truncation, mostly inside the header
            truncated_to = rng.below(3) ? rng.below(header_end + 64) : rng.below(orig.size());
            if (op == 9 && truncated_to > 8) {
                const size_t at = rng.below(truncated_to);
                const uint8_t v = static_cast<uint8_t>(rng.next());
                set_bytes(at, &v, 1);
            }
            ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(truncated_to)), 0);
        }

        try {
            auto f = GgufFile::open(path);
            ++opened;
            // Every tensor's bytes lie inside the mapping: touch the first and last byte.
            unsigned sum = 0;
            for (const auto& t : f->tensors())
                if (t.bytes) sum += t.data[0] + t.data[t.bytes - 1];
            (void)sum;
            model::Glm4Config::from_gguf(*f);
            ++config_ok;
        } catch (const Error& e) {
            ++rejected;
            ++by_code[error_code_name(e.code())];
            const std::string m = e.what();
            ASSERT_EQ(m.find('\n'), std::string::npos) << "iteration " << it << ": " << m;
            ASSERT_NE(m.find(path), std::string::npos) << "iteration " << it << ": " << m;
        } catch (const std::exception& e) {
            FAIL() << "iteration " << it << ": non-pipelm exception " << typeid(e).name() << ": " << e.what();
        } catch (...) {
            FAIL() << "iteration " << it << ": unknown exception";
        }

        // Restore.
        if (truncated_to != orig.size()) {
            ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(orig.size())), 0);
            pwrite_all(orig.data() + truncated_to, orig.size() - truncated_to, truncated_to);
        }
        for (size_t at : touched) pwrite_all(orig.data() + at, 1, at);
    }
    ::close(fd);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string codes;
    for (const auto& kv : by_code) codes += " " + kv.first + "=" + std::to_string(kv.second);
    std::printf("[ fuzz     ] %d iterations in %.2f s: %d opened (%d with a valid config), %d rejected:%s\n",
                iterations, secs, opened, config_ok, rejected, codes.c_str());
    EXPECT_EQ(read_bytes(path), orig) << "restore failed";
    EXPECT_GT(rejected, iterations / 3);  // the mutations do reach the checks
    EXPECT_GT(config_ok, 0);
}

}  // namespace
}  // namespace pipelm
