// matmul / matmul_rows: accuracy against an FP64 reference on odd shapes, and the bit-exact
// invariance contract (n_tokens, thread count, row split, ISA).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels_test_util.h"
#include "runtime/base/error.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::kernels {
namespace {

using testing::all_types;
using testing::first_bit_diff;
using testing::make_weight;
using testing::random_normal_x;
using testing::Weight;

// Row lengths to test for a type: 1..3 blocks (for f32/f16/bf16: odd lengths around the
// 8-lane width) and a long row (4352 = 17 * 256: many k blocks of the GEMM).
std::vector<int64_t> test_cols(GgmlType type) {
    const int64_t qk = ggml_type_info(type).block;
    if (qk == 1) return {1, 2, 3, 7, 13, 40, 4352 + 5};
    return {qk, 2 * qk, 3 * qk, 4352};
}

// Accuracy: y must be within the FP32 rounding bound of the exact (FP64) dot product of the
// dequantized weights with x. Each output sums k products in 8 lanes of ceil(k/8) FMAs (one
// rounding each; products are exact inside the FMA) and then a 3-level tree of additions, so
// |y - exact| <= gamma_(ceil(k/8)+3) * sum_k |w_k x_k|, gamma_m = m*u/(1-m*u), u = 2^-24.
// Use that bound times 1.01.
TEST(Matmul, MatchesFp64ReferenceOnOddShapes) {
    std::mt19937_64 rng(42);
    ThreadPool pool(2);
    for (GgmlType type : all_types()) {
        for (int64_t cols : test_cols(type)) {
            for (int64_t rows : {1, 3, 17, 67}) {
                Weight w = make_weight(type, rows, cols, rng);
                const std::vector<float> wf = testing::dequantize_weight(w);
                for (int64_t n : {1, 2, 5, 13}) {
                    const int64_t ldx = cols + 3, ldy = rows + 2;
                    const auto x = random_normal_x(n, ldx, rng);
                    std::vector<float> y(n * ldy, -1.f);
                    matmul(w.m, x.data(), ldx, y.data(), ldy, n, pool);
                    const double u = std::ldexp(1.0, -24);
                    const double m = static_cast<double>((cols + 7) / 8 + 3);
                    const double gamma = m * u / (1 - m * u) * 1.01;
                    for (int64_t t = 0; t < n; ++t) {
                        for (int64_t r = 0; r < rows; ++r) {
                            double exact = 0, mag = 0;
                            for (int64_t k = 0; k < cols; ++k) {
                                const double p = double(wf[r * cols + k]) * x[t * ldx + k];
                                exact += p;
                                mag += std::fabs(p);
                            }
                            ASSERT_LE(std::fabs(y[t * ldy + r] - exact), gamma * mag + 1e-30)
                                << ggml_type_name(type) << " rows " << rows << " cols " << cols << " n " << n
                                << " (r " << r << ", t " << t << ")";
                        }
                        for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(y[t * ldy + r], -1.f) << "wrote past the rows";
                    }
                }
            }
        }
    }
}

// The contract of matmul.h: y[t][r] depends only on row r of W and row t of x.
void check_invariance(const Weight& w, int64_t n, std::mt19937_64& rng) {
    const int64_t ldx = w.cols + 1, ldy = w.rows + 3;
    const auto x = random_normal_x(n, ldx, rng);
    ThreadPool pool1(1), pool2(2), pool3(3);
    std::vector<float> full(n * ldy);
    matmul(w.m, x.data(), ldx, full.data(), ldy, n, pool2);
    const std::string what = std::string(ggml_type_name(w.type)) + " rows " + std::to_string(w.rows) + " cols " +
                             std::to_string(w.cols) + " n " + std::to_string(n);
    // Thread count.
    for (ThreadPool* p : {&pool1, &pool3}) {
        std::vector<float> y(n * ldy);
        matmul(w.m, x.data(), ldx, y.data(), ldy, n, *p);
        ASSERT_EQ(first_bit_diff(y.data(), full.data(), n * ldy), -1) << what << " threads " << p->size();
    }
    // One token at a time (GEMV path) vs the whole batch (GEMM path when n is large).
    for (int64_t t = 0; t < n; ++t) {
        std::vector<float> y(w.rows);
        matmul(w.m, x.data() + t * ldx, w.cols, y.data(), w.rows, 1, pool2);
        ASSERT_EQ(first_bit_diff(y.data(), full.data() + t * ldy, w.rows), -1) << what << " token " << t;
    }
    // Sub-batches: tokens [t0, t0 + m).
    for (int64_t t0 = 0, m = 1; t0 < n; t0 += m, m = m % 7 + 1) {
        const int64_t mm = std::min(m, n - t0);
        std::vector<float> y(mm * ldy);
        matmul(w.m, x.data() + t0 * ldx, ldx, y.data(), ldy, mm, pool2);
        for (int64_t t = 0; t < mm; ++t)
            ASSERT_EQ(first_bit_diff(y.data() + t * ldy, full.data() + (t0 + t) * ldy, w.rows), -1)
                << what << " sub-batch at " << t0 << " of " << mm;
    }
    // Row pieces (matmul_rows), odd boundaries.
    ASSERT_NO_FATAL_FAILURE(testing::check_row_split(w, x, ldx, full, ldy, n, pool2, ActQuant::kNone, what));
}

TEST(Matmul, BitExactAcrossBatchThreadsAndRowSplits) {
    std::mt19937_64 rng(3);
    for (GgmlType type : all_types()) {
        const int64_t qk = ggml_type_info(type).block;
        for (int64_t cols : {qk == 1 ? int64_t{77} : 3 * qk, int64_t{4352}}) {
            Weight w = make_weight(type, 67, cols, rng);
            check_invariance(w, 13, rng);  // GEMM for every type
            check_invariance(w, detail::gemv_max_tokens(type) + 1, rng);  // first GEMM size
            check_invariance(w, 4, rng);  // GEMV (2 + 2 tokens) or GEMM, depending on the type
        }
    }
}

TEST(Matmul, BitExactAcrossTokenBlocks) {
    // More tokens than one GEMM token block (96), more rows than one row panel (32) and more
    // k than one k block (512), plus a non-multiple-of-8 row for f32.
    std::mt19937_64 rng(8);
    for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ6_K}) {
        Weight w = make_weight(type, 37, 1280, rng);
        check_invariance(w, 101, rng);
    }
    {
        Weight w = make_weight(GgmlType::kF32, 35, 1029, rng);
        check_invariance(w, 101, rng);
    }
}

// Every ISA follows the same accumulation order with the exact dequantized weights, so the
// scalar fallback and each SIMD level (AVX2, AVX-512 zmm GEMM tiles, ...) agree bit for bit
// (also checks the in-register decoders against dequantize_row on arbitrary block bytes), for
// GEMV and GEMM token counts, tails of the float types and k blocks of the GEMM.
class MatmulIsa : public ::testing::TestWithParam<std::string> {};

TEST_P(MatmulIsa, BitIdenticalToScalar) {
    const std::string isa = GetParam();
    {
        testing::ForcedIsa f(isa);
        if (!f.ok) GTEST_SKIP() << testing::isa_skip_reason(isa);
    }
    std::mt19937_64 rng(11);
    ThreadPool pool(2);
    for (GgmlType type : all_types()) {
        const int64_t qk = ggml_type_info(type).block;
        for (bool random_bytes : {false, true}) {
            // Float types also 1300 columns: 162 blocks of 8 (the zmm GEMV's 64-byte groups, then
            // single blocks) and a tail of 4.
            std::vector<int64_t> col_list = {qk == 1 ? int64_t{29} : qk, int64_t{1280}};
            if (qk == 1) col_list.push_back(1300);
            for (int64_t cols : col_list) {
                Weight w = make_weight(type, 19, cols, rng, random_bytes);
                // 1-8: every GEMV tile width (the zmm float GEMV runs n tokens in one pass).
                for (int64_t n : {1, 2, 3, 4, 5, 8, 9, 14}) {
                    const auto x = random_normal_x(n, cols, rng);
                    ASSERT_NO_FATAL_FAILURE(
                        testing::check_isa_matches_scalar(w, w.m, x, n, pool, ActQuant::kNone, isa, random_bytes, true));
                }
            }
        }
    }
}

// More tokens than one token block of either GEMM (96 / 128), several k blocks, a float tail.
TEST_P(MatmulIsa, LargeBatchBitIdenticalToScalar) {
    const std::string isa = GetParam();
    {
        testing::ForcedIsa f(isa);
        if (!f.ok) GTEST_SKIP() << testing::isa_skip_reason(isa);
    }
    std::mt19937_64 rng(13);
    ThreadPool pool(2);
    for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_K, GgmlType::kQ5_0}) {
        const int64_t cols = type == GgmlType::kF32 ? 1029 : 1280;
        Weight w = make_weight(type, 21, cols, rng);
        const auto x = random_normal_x(203, cols, rng);
        ASSERT_NO_FATAL_FAILURE(testing::check_isa_matches_scalar(w, w.m, x, 203, pool, ActQuant::kNone, isa, false, false));
    }
}

INSTANTIATE_TEST_SUITE_P(Isa, MatmulIsa, ::testing::ValuesIn(testing::simd_isas()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(Matmul, EdgeCases) {
    std::mt19937_64 rng(1);
    ThreadPool pool(2);
    Weight w = make_weight(GgmlType::kQ8_0, 5, 64, rng);
    const auto x = random_normal_x(2, 64, rng);
    std::vector<float> y(10, 7.f);
    matmul(w.m, x.data(), 64, y.data(), 5, 0, pool);  // no tokens: nothing written
    for (float v : y) EXPECT_EQ(v, 7.f);
    matmul_rows(w.m, 2, 2, x.data(), 64, y.data(), 5, 2, pool);  // empty row range
    for (float v : y) EXPECT_EQ(v, 7.f);
    EXPECT_THROW(matmul_rows(w.m, 3, 6, x.data(), 64, y.data(), 5, 1, pool), Error);
    WeightView bad = w.m.view();
    bad.cols = 48;  // not a multiple of 32
    EXPECT_THROW(Matrix::prepare(bad), Error);
    bad = w.m.view();
    bad.type = GgmlType::kQ3_K;
    EXPECT_THROW(Matrix::prepare(bad), Error);
    const std::string isa = cpu_isa_name();
    EXPECT_TRUE(isa == "scalar" || isa == "avx2+fma+f16c" || isa == "avx2+avx-vnni" || isa == "avx512f/dq/bw/vl" ||
                isa == "avx512f/dq/bw/vl+vnni")
        << isa;
    EXPECT_FALSE(force_cpu_isa("avx9000"));
    for (const std::string& name : testing::simd_isas()) {
        if (force_cpu_isa(name.c_str())) {
            EXPECT_NE(std::string(cpu_isa_name()), "scalar") << name;
        }
    }
    EXPECT_TRUE(force_cpu_isa("auto"));
    EXPECT_EQ(std::string(cpu_isa_name()), isa);
    (void)request_amx();  // must not crash; false on CPUs without AMX
}

}  // namespace
}  // namespace pipelm::kernels
