// Every block of every tensor of the real llama-quantize outputs in tests/data/models
// (copies of shared/testdata/models/glm4-quant{,-ff416}/*.gguf): dequantize_row must equal the
// independent reference bit for bit, and the AVX2 matmul must equal the scalar one bit for bit.
// A tiny GGUF tensor-table reader lives here so the test does not depend on runtime/gguf.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels_test_util.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::kernels {
namespace {

struct GgufTensor {
    std::string name;
    std::vector<int64_t> ne;
    uint32_t type = 0;
    uint64_t offset = 0;
    int64_t n_elements() const {
        int64_t n = 1;
        for (int64_t d : ne) n *= d;
        return n;
    }
};

struct GgufFile {
    std::vector<uint8_t> bytes;
    std::vector<GgufTensor> tensors;
    size_t data_start = 0;
};

class Reader {
public:
    explicit Reader(const std::vector<uint8_t>& b) : b_(b) {}
    template <class T>
    T get() {
        if (pos_ + sizeof(T) > b_.size()) throw std::runtime_error("truncated GGUF");
        T v;
        std::memcpy(&v, b_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string str() {
        const uint64_t n = get<uint64_t>();
        if (pos_ + n > b_.size()) throw std::runtime_error("truncated GGUF string");
        std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
        pos_ += n;
        return s;
    }
    // Skips one value of GGUF type `t`; returns it as u64 when it is an integer scalar.
    uint64_t skip_value(uint32_t t) {
        static const size_t kSize[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        if (t == 8) {
            str();
            return 0;
        }
        if (t == 9) {
            const uint32_t et = get<uint32_t>();
            const uint64_t n = get<uint64_t>();
            for (uint64_t i = 0; i < n; ++i) skip_value(et);
            return 0;
        }
        if (t > 12) throw std::runtime_error("bad GGUF value type");
        uint64_t v = 0;
        std::memcpy(&v, b_.data() + pos_, kSize[t]);
        pos_ += kSize[t];
        return v;
    }
    size_t pos() const { return pos_; }

private:
    const std::vector<uint8_t>& b_;
    size_t pos_ = 0;
};

GgufFile read_gguf(const std::string& path) {
    GgufFile f;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    f.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    Reader r(f.bytes);
    if (r.get<uint32_t>() != 0x46554747u) throw std::runtime_error("not GGUF: " + path);
    const uint32_t version = r.get<uint32_t>();
    if (version < 2) throw std::runtime_error("GGUF v1 not supported");
    const uint64_t n_tensors = r.get<uint64_t>();
    const uint64_t n_kv = r.get<uint64_t>();
    uint64_t alignment = 32;
    for (uint64_t i = 0; i < n_kv; ++i) {
        const std::string key = r.str();
        const uint32_t t = r.get<uint32_t>();
        const uint64_t v = r.skip_value(t);
        if (key == "general.alignment") alignment = v;
    }
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensor t;
        t.name = r.str();
        const uint32_t nd = r.get<uint32_t>();
        for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(static_cast<int64_t>(r.get<uint64_t>()));
        t.type = r.get<uint32_t>();
        t.offset = r.get<uint64_t>();
        f.tensors.push_back(t);
    }
    f.data_start = (r.pos() + alignment - 1) / alignment * alignment;
    return f;
}

std::vector<std::string> quant_files() {
    std::vector<std::string> files;
    const std::string dir = std::string(PIPELM_TEST_DATA) + "/models";
    for (const char* sub : {"glm4-quant", "glm4-quant-ff416"})
        for (const auto& e : std::filesystem::directory_iterator(dir + "/" + sub))
            if (e.path().extension() == ".gguf") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    return files;
}

TEST(GgufBlocks, EveryTensorDequantizesBitExact) {
    const auto files = quant_files();
    ASSERT_EQ(files.size(), 13u) << "expected the 10 + 3 llama-quantize files in tests/data/models";
    std::map<std::string, int64_t> blocks_per_type;
    for (const auto& path : files) {
        const GgufFile f = read_gguf(path);
        ASSERT_FALSE(f.tensors.empty()) << path;
        for (const auto& t : f.tensors) {
            const GgmlType type = static_cast<GgmlType>(t.type);
            ASSERT_TRUE(quant_type_supported(type)) << path << " " << t.name << " type " << t.type;
            const int64_t n = t.n_elements();
            const auto& ti = ggml_type_info(type);
            const size_t bytes = static_cast<size_t>(n / ti.block) * ti.block_bytes;
            ASSERT_LE(f.data_start + t.offset + bytes, f.bytes.size()) << path << " " << t.name;
            const uint8_t* data = f.bytes.data() + f.data_start + t.offset;
            std::vector<float> got(n);
            dequantize_row(type, data, got.data(), n);
            const auto want = testing::ref_dequantize(type, data, n);
            const int64_t i = testing::first_bit_diff(got.data(), want.data(), n);
            ASSERT_EQ(i, -1) << path << " " << t.name << " (" << ti.name << ") element " << i;
            blocks_per_type[ti.name] += n / ti.block;
        }
    }
    for (const char* name : {"f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q4_K", "q5_K", "q6_K", "iq4_xs"})
        EXPECT_GT(blocks_per_type[name], 0) << "no " << name << " tensor in the test files";
    for (const auto& [name, n] : blocks_per_type)
        std::printf("  %-7s %8lld blocks checked\n", name.c_str(), (long long)n);
}

// Every SIMD level this CPU has gives the scalar reference's bits on the llama.cpp-quantized
// test files, with exact activations and with kQ8 on weights repacked under that level.
// The scalar reference is computed once per (tensor, activation mode, batch) and every ISA this
// CPU runs is compared with it (under the sanitizers the scalar path is the expensive part).
TEST(GgufBlocks, MatmulEveryIsaAgreesWithScalarOnRealWeights) {
    ThreadPool pool(2);
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nd(0.f, 1.f);
    if (!force_cpu_isa("avx2")) GTEST_SKIP() << testing::isa_skip_reason("avx2");
    std::vector<std::string> isas;
    for (const std::string& isa : testing::simd_isas()) {
        if (force_cpu_isa(isa.c_str())) isas.push_back(isa);
        else std::printf("  %s: %s\n", isa.c_str(), testing::isa_skip_reason(isa).c_str());
    }
    force_cpu_isa("auto");
    int checked = 0;
    for (const auto& path : quant_files()) {
        const GgufFile f = read_gguf(path);
        for (const auto& t : f.tensors) {
            if (t.ne.size() != 2 || t.name.find("token_embd") != std::string::npos) continue;
            const GgmlType type = static_cast<GgmlType>(t.type);
            WeightView v;
            v.type = type;
            v.data = f.bytes.data() + f.data_start + t.offset;
            v.cols = t.ne[0];
            v.rows = t.ne[1];
            v.row_bytes = ggml_row_bytes(type, v.cols);
            const Matrix m = Matrix::prepare(v);
            std::vector<Matrix> packed;  // per ISA: the layout it reads with kQ8
            for (const std::string& isa : isas) {
                ASSERT_TRUE(force_cpu_isa(isa.c_str()));
                Matrix::Options opt;
                opt.repack_q8 = true;
                packed.push_back(Matrix::prepare(v, opt));
            }
            for (ActQuant aq : {ActQuant::kNone, ActQuant::kQ8}) {
                for (int64_t n : {1, 7}) {
                    std::vector<float> x(n * v.cols);
                    for (auto& e : x) e = nd(rng);
                    std::vector<float> ya(n * v.rows), ys(n * v.rows);
                    ASSERT_TRUE(force_cpu_isa("scalar"));
                    matmul(m, x.data(), v.cols, ys.data(), v.rows, n, pool, aq);
                    for (size_t i = 0; i < isas.size(); ++i) {
                        ASSERT_TRUE(force_cpu_isa(isas[i].c_str()));
                        matmul(aq == ActQuant::kQ8 ? packed[i] : m, x.data(), v.cols, ya.data(), v.rows, n, pool, aq);
                        ASSERT_EQ(testing::first_bit_diff(ya.data(), ys.data(), n * v.rows), -1)
                            << isas[i] << " " << path << " " << t.name << " n=" << n << " aq " << static_cast<int>(aq);
                    }
                    force_cpu_isa("auto");
                }
            }
            ++checked;
        }
    }
    EXPECT_GT(checked, 50);
}

}  // namespace
}  // namespace pipelm::kernels
