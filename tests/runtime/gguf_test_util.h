// Shared helpers of the GGUF tests (gguf_test.cc, gguf_model_test.cc) and of cli_errors_test.cc.
#pragma once
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

// A fresh directory /tmp/<prefix>-XXXXXX, removed with everything in it at the end.
class TempDir {
public:
    explicit TempDir(const std::string& prefix = "pipelm-gguf-test") {
        std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
        const char* p = ::mkdtemp(&tmpl[0]);
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

inline std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
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

inline Value vu(ValueType t, uint64_t u) {
    Value v;
    v.type = t;
    v.u = u;
    return v;
}
inline Value vi(ValueType t, int64_t i) {
    Value v;
    v.type = t;
    v.i = i;
    return v;
}
inline Value vf(ValueType t, double f) {
    Value v;
    v.type = t;
    v.f = f;
    return v;
}
inline Value vb(bool b) { return vu(ValueType::kBool, b ? 1 : 0); }
inline Value vs(const std::string& s) { return GgufWriter::make_string(s); }
inline Value varr(ValueType elem, std::vector<Value> xs) {
    Value v;
    v.type = ValueType::kArray;
    v.elem_type = elem;
    for (const Value& x : xs) v.push_back(x);
    return v;
}
inline Value nested(int levels, Value leaf) {  // `levels` arrays around an array of one leaf
    Value v = varr(leaf.type, {leaf});
    for (int k = 1; k < levels; ++k) v = varr(ValueType::kArray, {v});
    return v;
}

inline bool is_unsigned(ValueType t) {
    return t == ValueType::kU8 || t == ValueType::kU16 || t == ValueType::kU32 || t == ValueType::kU64 ||
           t == ValueType::kBool;
}
inline bool is_signed(ValueType t) {
    return t == ValueType::kI8 || t == ValueType::kI16 || t == ValueType::kI32 || t == ValueType::kI64;
}

// Deep equality of a written and a read value (floats bit-exact at their stored width).
inline ::testing::AssertionResult same_value(const Value& want, const Value& got, const std::string& where) {
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
        if (want.size() != got.size())
            return ::testing::AssertionFailure() << where << ": " << got.size() << " elements, want "
                                                 << want.size();
        for (size_t k = 0; k < want.size(); ++k) {
            auto r = same_value(want.at(k), got.at(k), where + "[" + std::to_string(k) + "]");
            if (!r) return r;
        }
    }
    return ::testing::AssertionSuccess();
}

// Opening `path` must throw pipelm::Error with `code`, a one-line message naming the file and
// containing every word in `words`.
inline ::testing::AssertionResult open_fails(const std::string& path, ErrorCode code,
                                             const std::vector<std::string>& words) {
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

inline ::testing::AssertionResult open_fails(const std::string& path, const std::vector<std::string>& words) {
    return open_fails(path, ErrorCode::kFormat, words);
}

inline std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    uint32_t s = seed * 2654435761u + 12345u;
    for (auto& x : v) {
        s = s * 1664525u + 1013904223u;
        x = static_cast<uint8_t>(s >> 24);
    }
    return v;
}

inline uint64_t natural_bytes(GgmlType t, const std::vector<int64_t>& ne) {
    uint64_t rows = 1;
    for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
    return ggml_row_bytes(t, ne[0]) * rows;
}

// A small GLM-4 for mkmodel: 2 layers, 32-wide, 300 tokens, f32.
inline model::MkModelSpec tiny_spec() {
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
                pod<uint64_t>(v.size());
                for (size_t k = 0; k < v.size(); ++k) value(v.at(k));
                break;
        }
        return at;
    }
    void pad(uint64_t align) {
        while (b.size() % align) b.push_back(0);
    }
};

using Kvs = std::vector<std::pair<std::string, Value>>;

inline Built build(const Kvs& kvs, const std::vector<RawTensor>& ts, uint64_t align = 32, uint32_t version = 3) {
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

inline RawTensor raw_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne, uint32_t seed) {
    RawTensor t;
    t.name = name;
    t.type = static_cast<uint32_t>(type);
    for (int64_t d : ne) t.ne.push_back(static_cast<uint64_t>(d));
    t.data = pattern(natural_bytes(type, ne), seed);
    return t;
}

// The base valid file of the malformed tests: 5 keys, 3 tensors (alpha f32 [0,32), beta q8_0
// [32,100), gamma f16 [128,160)).
inline Kvs base_kvs() {
    return {
        {"general.architecture", vs("test")},
        {"test.count", vu(ValueType::kU32, 3)},
        {"test.flag", vb(true)},
        {"test.list", varr(ValueType::kI32, {vi(ValueType::kI32, 1), vi(ValueType::kI32, 2), vi(ValueType::kI32, 3)})},
        {"test.names", varr(ValueType::kString, {vs("ab"), vs("c")})},
    };
}
inline std::vector<RawTensor> base_tensors() {
    return {raw_tensor("alpha", GgmlType::kF32, {4, 2}, 1), raw_tensor("beta", GgmlType::kQ8_0, {32, 2}, 2),
            raw_tensor("gamma", GgmlType::kF16, {16}, 3)};
}
inline Built base_file() { return build(base_kvs(), base_tensors()); }

// ---------------------------------------------------------------------------------------------
// Round trips (writer -> reader).

class GgufRoundTrip : public ::testing::Test {
protected:
    TempDir tmp_;
};

inline Kvs all_scalar_kvs() {
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

inline Kvs all_array_kvs() {
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

}  // namespace
}  // namespace pipelm
