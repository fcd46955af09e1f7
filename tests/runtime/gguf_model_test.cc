// GLM-4 hyperparameter/tensor checks on GGUF files, and a deterministic header fuzz loop.
#include "tests/runtime/gguf_test_util.h"

#include "runtime/pipeline/stage_runner.h"

namespace pipelm {
namespace {

// ---------------------------------------------------------------------------------------------
// Model level: Glm4Config::from_gguf on a small GLM-4 written by mkmodel.

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

// The model identity of the stage handshake (pipeline::model_identity) covers the contents of
// metadata arrays: a worker whose vocabulary differs in one token (or one token type, or one
// nested element) is another model, while the same content written again is the same model.
TEST_F(Glm4FromGguf, ModelIdentityCoversEveryArrayElement) {
    auto id_of = [](const std::string& path) { return pipeline::model_identity(*GgufFile::open(path)); };
    auto edit_array = [](const std::string& key, const std::function<void(Value&)>& change) {
        return [key, change](Editable& e) {
            for (auto& kv : e.kvs)
                if (kv.first == key) return change(kv.second);
            throw std::runtime_error("no key " + key);
        };
    };
    const std::string same = dir_->path("id-same.gguf"), token = dir_->path("id-token.gguf"),
                      type = dir_->path("id-type.gguf"), nested_a = dir_->path("id-nested-a.gguf"),
                      nested_b = dir_->path("id-nested-b.gguf");
    rewrite(model_, same, [](Editable&) {});
    // One token string of 300, same length: the array's type and size are unchanged.
    rewrite(model_, token, edit_array("tokenizer.ggml.tokens", [](Value& v) {
        ASSERT_GT(v.strs.size(), 100u);
        v.strs[100].back() = static_cast<char>(v.strs[100].back() ^ 1);
    }));
    rewrite(model_, type, edit_array("tokenizer.ggml.token_type", [](Value& v) {
        ASSERT_GT(v.raw.size(), 4u * 101);
        v.raw[4 * 100] ^= 1;
    }));
    // An array of arrays that differ in one inner element.
    auto nested = [](int32_t last) {
        return [last](Editable& e) {
            Value outer, inner;
            outer.type = inner.type = ValueType::kArray;
            outer.elem_type = ValueType::kArray;
            inner.elem_type = ValueType::kI32;
            for (int32_t x : {1, 2, last}) {
                Value el;
                el.type = ValueType::kI32;
                el.i = x;
                inner.push_back(el);
            }
            outer.push_back(inner);
            e.kvs.emplace_back("test.nested", outer);
        };
    };
    rewrite(model_, nested_a, nested(3));
    rewrite(model_, nested_b, nested(4));

    const std::string base = id_of(model_);
    EXPECT_EQ(base.size(), 16u) << base;  // XXH3-64 in hex
    EXPECT_EQ(id_of(model_), base);
    EXPECT_EQ(id_of(same), base) << "the same content written again";
    EXPECT_NE(id_of(token), base) << "one token string differs";
    EXPECT_NE(id_of(type), base) << "one token type differs";
    EXPECT_NE(id_of(token), id_of(type));
    EXPECT_NE(id_of(nested_a), id_of(nested_b)) << "one element of a nested array differs";
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
