// matmul with ActQuant::kQ8 (int8 activations, integer dot products): accuracy against FP64
// references, the bit-exact invariance contract (n_tokens, threads, row split, ISA) and the
// fallbacks.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/matmul_q8.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "kernels_test_util.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::kernels {
namespace {

using testing::first_bit_diff;
using testing::Weight;

const std::vector<GgmlType>& q8_types() {
    static const std::vector<GgmlType> v = {GgmlType::kQ8_0,  GgmlType::kQ4_K, GgmlType::kQ6_K,
                                            GgmlType::kIQ4_XS, GgmlType::kQ4_0, GgmlType::kQ5_K,
                                            GgmlType::kIQ4_NL, GgmlType::kQ5_0, GgmlType::kQ4_1,
                                            GgmlType::kQ5_1};
    return v;
}

// Random bytes: fp16 exponents <= 25, no overflow anywhere in the products (bit comparisons of
// infinities/NaNs are not the point here).
Weight make_weight(GgmlType type, int64_t rows, int64_t cols, std::mt19937_64& rng, bool random_bytes = false) {
    return testing::make_weight(type, rows, cols, rng, random_bytes, 25);
}

std::vector<float> random_x(int64_t n, int64_t ldx, std::mt19937_64& rng) {
    std::vector<float> x = testing::random_normal_x(n, ldx, rng);
    // a few all-zero blocks (d = 0) and a spike (one large value per block)
    if (ldx >= 64) {
        for (int64_t t = 0; t < n; t += 3)
            for (int i = 32; i < 64; ++i) x[t * ldx + i] = 0.f;
        for (int64_t t = 1; t < n; t += 4) x[t * ldx + 5] = 40.f;
    }
    return x;
}

// The test's own activation quantization (written from the contract in matmul.h): values
// q * d as doubles, and d per block.
void ref_quantize(const float* x, int64_t K, std::vector<double>& xq, std::vector<double>& d) {
    xq.assign(K, 0.0);
    d.assign(K / 32, 0.0);
    for (int64_t b = 0; b < K / 32; ++b) {
        float amax = 0.f;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
        const float db = amax / 127.f;
        d[b] = db;
        for (int i = 0; i < 32; ++i) {
            const float q = db == 0.f ? 0.f : std::min(127.f, std::max(-127.f, std::nearbyint(x[32 * b + i] / db)));
            xq[32 * b + i] = static_cast<double>(q) * db;
        }
    }
}

std::vector<int64_t> q8_test_cols(GgmlType type) {
    if (ggml_type_info(type).block == 32) return {32, 96, 288, 4128};  // 4128 = 129 blocks (16 groups + 1)
    return {256, 768, 4352};
}

// Accuracy. (1) Against the FP64 dot product of the dequantized weights with the *quantized*
// activations (the same q, d as the kernel's): the kernel's integer sums are exact, so only the
// float steps differ — one rounding of each scale product fl(f*d), of s = fl(d * Σq), and one
// per fma into 8 lanes (<= blocks + groups per lane) plus the 3-level reduction; and for
// Q4_K/Q5_K/Q4_1/Q5_1 dequantize_row's own rounding of d1*q - m1. So
// |y - ref| <= gamma_(nb + ng + 6) * M with M = Σ_k 4 * max|w in k's block| * |xq_k| (4 * the
// block max bounds |f m v| + |mn| for realistically quantized blocks). In practice the relative
// error is ~1e-7. (2) Against exact f32 activations: each activation moves by at most d_b/2 =
// amax_b/254, so |y - exact| <= Σ_k |w_k| d_b / 2 (+ the bound above); the RMS relative error
// of 8-bit activations on Gaussian data is ~0.5% and is checked to stay below 2%.
TEST(MatmulQ8, MatchesFp64References) {
    std::mt19937_64 rng(42);
    ThreadPool pool(2);
    for (GgmlType type : q8_types()) {
        ASSERT_TRUE(act_quant_supported(type)) << ggml_type_name(type);
        double err2 = 0, ref2 = 0;
        for (int64_t cols : q8_test_cols(type)) {
            for (int64_t rows : {1, 3, 17, 67}) {
                Weight w = make_weight(type, rows, cols, rng);
                const std::vector<float> wf = testing::dequantize_weight(w);
                for (int64_t n : {1, 2, 5, 13}) {
                    const int64_t ldx = cols + 3, ldy = rows + 2;
                    const auto x = random_x(n, ldx, rng);
                    std::vector<float> y(n * ldy, -1.f);
                    matmul(w.m, x.data(), ldx, y.data(), ldy, n, pool, ActQuant::kQ8);
                    const int64_t nb = cols / 32, ng = (nb + 7) / 8;
                    const double u = std::ldexp(1.0, -24), m = static_cast<double>(nb + ng + 6);
                    const double gamma = m * u / (1 - m * u);
                    std::vector<double> xq, d;
                    for (int64_t t = 0; t < n; ++t) {
                        ref_quantize(x.data() + t * ldx, cols, xq, d);
                        for (int64_t r = 0; r < rows; ++r) {
                            const float* wr = wf.data() + r * cols;
                            double ref = 0, exact = 0, M = 0, qerr = 0;
                            for (int64_t b = 0; b < nb; ++b) {
                                double bmax = 0;
                                for (int i = 0; i < 32; ++i) bmax = std::max(bmax, std::fabs(double(wr[32 * b + i])));
                                for (int i = 0; i < 32; ++i) {
                                    const int64_t k = 32 * b + i;
                                    ref += double(wr[k]) * xq[k];
                                    exact += double(wr[k]) * x[t * ldx + k];
                                    M += 4 * bmax * std::fabs(xq[k]);
                                    qerr += std::fabs(double(wr[k])) * d[b] / 2;
                                }
                            }
                            const double yv = y[t * ldy + r];
                            ASSERT_LE(std::fabs(yv - ref), gamma * M + 1e-30)
                                << ggml_type_name(type) << " rows " << rows << " cols " << cols << " n " << n
                                << " (r " << r << ", t " << t << ") y " << yv << " ref " << ref;
                            ASSERT_LE(std::fabs(yv - exact), qerr * (1 + 1e-6) + gamma * M + 1e-30)
                                << ggml_type_name(type) << " vs exact activations, cols " << cols;
                            err2 += (yv - exact) * (yv - exact);
                            ref2 += exact * exact;
                        }
                        for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(y[t * ldy + r], -1.f) << "wrote past the rows";
                    }
                }
            }
        }
        EXPECT_LT(std::sqrt(err2 / ref2), 0.02) << ggml_type_name(type);
    }
}

// The contract of matmul.h for kQ8: y[t][r] depends only on row r of W and row t of x.
void check_invariance(const Weight& w, std::mt19937_64& rng) {
    const int64_t nmax = 64, ldx = w.cols + 1, ldy = w.rows + 3;
    const auto x = random_x(nmax, ldx, rng);
    ThreadPool pool1(1), pool2(2), pool3(3);
    std::vector<float> full(nmax * ldy);
    matmul(w.m, x.data(), ldx, full.data(), ldy, nmax, pool2, ActQuant::kQ8);
    const std::string what = std::string(ggml_type_name(w.type)) + " rows " + std::to_string(w.rows) + " cols " +
                             std::to_string(w.cols);
    for (int64_t n : {1, 2, 3, 4, 5, 8, 9, 13, 64}) {
        for (ThreadPool* p : {&pool1, &pool2, &pool3}) {
            for (int64_t t0 : {int64_t{0}, nmax - n}) {  // first and last tokens of the batch
                std::vector<float> y(n * ldy);
                matmul(w.m, x.data() + t0 * ldx, ldx, y.data(), ldy, n, *p, ActQuant::kQ8);
                for (int64_t t = 0; t < n; ++t)
                    ASSERT_EQ(first_bit_diff(y.data() + t * ldy, full.data() + (t0 + t) * ldy, w.rows), -1)
                        << what << " n " << n << " threads " << p->size() << " token " << t0 + t;
            }
        }
    }
    // Row pieces (matmul_rows), odd boundaries.
    for (int64_t n : {int64_t{1}, int64_t{13}})
        ASSERT_NO_FATAL_FAILURE(testing::check_row_split(w, x, ldx, full, ldy, n, pool2, ActQuant::kQ8, what));
}

TEST(MatmulQ8, BitExactAcrossBatchThreadsAndRowSplits) {
    std::mt19937_64 rng(3);
    for (GgmlType type : q8_types()) {
        const bool small = ggml_type_info(type).block == 32;
        for (int64_t cols : small ? std::vector<int64_t>{96, 4128} : std::vector<int64_t>{256, 4352}) {
            Weight w = make_weight(type, 67, cols, rng);
            check_invariance(w, rng);
        }
    }
}

// Every SIMD level gives the scalar reference's bits with kQ8, on the file layout (AVX2 integer
// decoders against the scalar ones on arbitrary block bytes) and on weights repacked at load
// under that level (Matrix::Options::repack_q8; the AVX2 maddubs kernels, or the vpdpbusd ones of
// the VNNI levels): every type, realistic and random block bytes, partial groups of 8 blocks,
// odd row counts, every token count path (record GEMV for 1-2 tokens, 4-token tiles, panel
// GEMM with tails of its register tiles, k blocks of 16 groups, several token blocks), thread
// counts and row splits. kNone ignores the repacked copy.
class MatmulQ8Isa : public ::testing::TestWithParam<std::string> {};

TEST_P(MatmulQ8Isa, FileLayoutBitIdenticalToScalar) {
    const std::string isa = GetParam();
    {
        testing::ForcedIsa f(isa);
        if (!f.ok) GTEST_SKIP() << testing::isa_skip_reason(isa);
    }
    std::mt19937_64 rng(11);
    ThreadPool pool(2);
    for (GgmlType type : q8_types()) {
        const int64_t qk = ggml_type_info(type).block;
        for (bool random_bytes : {false, true}) {
            for (int64_t cols : {qk, qk == 32 ? int64_t{288} : int64_t{1280}}) {
                Weight w = make_weight(type, 19, cols, rng, random_bytes);
                for (int64_t n : {1, 3, 4, 9, 13}) {
                    const auto x = random_x(n, cols, rng);
                    ASSERT_NO_FATAL_FAILURE(
                        testing::check_isa_matches_scalar(w, w.m, x, n, pool, ActQuant::kQ8, isa, random_bytes, false));
                }
            }
        }
    }
}

TEST_P(MatmulQ8Isa, RepackedBitIdenticalToScalar) {
    const std::string isa = GetParam();
    testing::ForcedIsa forced(isa);
    if (!forced.ok) GTEST_SKIP() << testing::isa_skip_reason(isa);
    std::mt19937_64 rng(17);
    ThreadPool pool1(1), pool2(2), pool3(3);
    for (GgmlType type : q8_types()) {
        const bool big = ggml_type_info(type).block == 256;
        for (bool random_bytes : {false, true}) {
            for (int64_t cols : big ? std::vector<int64_t>{256, 1280, 4352} : std::vector<int64_t>{32, 96, 288, 1024, 4128}) {
                for (int64_t rows : {1, 5, 37}) {  // 37: 4 row blocks of the zmm GEMM and a partial one
                    Weight w = make_weight(type, rows, cols, rng, random_bytes);
                    Matrix::Options opt;
                    opt.repack_q8 = true;
                    opt.pool = random_bytes ? &pool3 : nullptr;  // repacked in parallel or serially
                    ASSERT_TRUE(force_cpu_isa(isa.c_str()));
                    const Matrix packed = Matrix::prepare(w.m.view(), opt);
                    ASSERT_NE(packed.packed(), nullptr) << ggml_type_name(type);
                    const int64_t nmax = 40, ldx = cols + 3, ldy = rows + 2;
                    const auto x = random_x(nmax, ldx, rng);
                    const std::string what = isa + " " + ggml_type_name(type) + " cols " + std::to_string(cols) +
                                             " rows " + std::to_string(rows) + (random_bytes ? " random bytes" : "");
                    for (ActQuant aq : {ActQuant::kQ8, ActQuant::kNone}) {
                        std::vector<float> ref(nmax * ldy);
                        ASSERT_TRUE(force_cpu_isa("scalar"));
                        matmul(w.m, x.data(), ldx, ref.data(), ldy, nmax, pool1, aq);
                        ASSERT_TRUE(force_cpu_isa(isa.c_str()));
                        for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 24, 40}) {  // 40: the zmm panel GEMM
                            for (ThreadPool* p : {&pool1, &pool2, &pool3}) {
                                std::vector<float> y(n * ldy);
                                matmul(packed, x.data(), ldx, y.data(), ldy, n, *p, aq);
                                for (int64_t t = 0; t < n; ++t)
                                    ASSERT_EQ(first_bit_diff(y.data() + t * ldy, ref.data() + t * ldy, rows), -1)
                                        << what << " n " << n << " threads " << p->size() << " token " << t;
                            }
                        }
                        if (rows > 16) {
                            Weight pw = w;
                            pw.m = packed;
                            for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{13}})
                                ASSERT_NO_FATAL_FAILURE(
                                    testing::check_row_split(pw, x, ldx, ref, ldy, n, pool2, aq, what + " (split)"));
                        }
                    }
                }
            }
        }
    }
    // Types without an integer kernel are left as they are.
    Weight h = make_weight(GgmlType::kF16, 4, 256, rng);
    Matrix::Options opt;
    opt.repack_q8 = true;
    EXPECT_EQ(Matrix::prepare(h.m.view(), opt).packed(), nullptr);
}

// Prefill sizes: more tokens than one token block of the panel GEMM and more k than one k block,
// every type, against the scalar reference.
TEST_P(MatmulQ8Isa, RepackedLargeBatchBitIdenticalToScalar) {
    const std::string isa = GetParam();
    testing::ForcedIsa forced(isa);
    if (!forced.ok) GTEST_SKIP() << testing::isa_skip_reason(isa);
    std::mt19937_64 rng(29);
    ThreadPool pool(2);
    for (GgmlType type : q8_types()) {
        const int64_t cols = ggml_type_info(type).block == 256 ? 4352 : 4128, rows = 11, n = 203;
        Weight w = make_weight(type, rows, cols, rng);
        Matrix::Options opt;
        opt.repack_q8 = true;
        ASSERT_TRUE(force_cpu_isa(isa.c_str()));
        const Matrix packed = Matrix::prepare(w.m.view(), opt);
        const auto x = random_x(n, cols, rng);
        std::vector<float> ref(n * rows), y(n * rows);
        ASSERT_TRUE(force_cpu_isa("scalar"));
        matmul(w.m, x.data(), cols, ref.data(), rows, n, pool, ActQuant::kQ8);
        ASSERT_TRUE(force_cpu_isa(isa.c_str()));
        matmul(packed, x.data(), cols, y.data(), rows, n, pool, ActQuant::kQ8);
        ASSERT_EQ(first_bit_diff(y.data(), ref.data(), n * rows), -1) << isa << " " << ggml_type_name(type);
    }
}

// Repacking reports its progress in steps of about kReleaseStep source bytes (the stage drops
// the file pages of the rows already copied, so loading holds one copy of a weight plus a step,
// not two), ends at the last row, and gives the bits of a repack in one go.
TEST(MatmulQ8, RepackReportsRowsInStepsAndKeepsTheBits) {
    std::mt19937_64 rng(31);
    ThreadPool pool(2);
    const int64_t cols = 4096;
    const int64_t step_rows = static_cast<int64_t>(Matrix::kReleaseStep / ggml_row_bytes(GgmlType::kQ8_0, cols)) / 64 * 64;
    const int64_t rows = 2 * step_rows + 77;  // two whole steps and a partial one
    Weight w = make_weight(GgmlType::kQ8_0, rows, cols, rng);
    Matrix::Options whole;
    whole.repack_q8 = true;
    whole.pool = &pool;
    Matrix::Options stepped = whole;
    std::vector<int64_t> ends;
    stepped.rows_packed = [&](int64_t row_end) { ends.push_back(row_end); };
    const Matrix a = Matrix::prepare(w.m.view(), whole), b = Matrix::prepare(w.m.view(), stepped);
    if (a.packed() == nullptr) GTEST_SKIP() << "this CPU has no integer kernels to repack for (no AVX2)";
    EXPECT_EQ(ends, (std::vector<int64_t>{step_rows, 2 * step_rows, rows}));
    const auto x = random_x(3, cols, rng);
    std::vector<float> ya(3 * rows), yb(3 * rows);
    matmul(a, x.data(), cols, ya.data(), rows, 3, pool, ActQuant::kQ8);
    matmul(b, x.data(), cols, yb.data(), rows, 3, pool, ActQuant::kQ8);
    EXPECT_EQ(first_bit_diff(ya.data(), yb.data(), 3 * rows), -1);
    // Nothing repacked (F16 has no integer kernel): nothing reported.
    ends.clear();
    Weight h = make_weight(GgmlType::kF16, 8, 256, rng);
    EXPECT_EQ(Matrix::prepare(h.m.view(), stepped).packed(), nullptr);
    EXPECT_TRUE(ends.empty());
}

INSTANTIATE_TEST_SUITE_P(Isa, MatmulQ8Isa, ::testing::ValuesIn(testing::simd_isas()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// Four weights of `cols` columns as a layer's group might mix them: Q8_0 96 rows, Q4_K 40, F16 24
// (no integer kernel: exact in both modes) and Q6_K 17 (not a multiple of the 16-row grain).
std::vector<Weight> mixed_weights(int64_t cols, std::mt19937_64& rng) {
    std::vector<Weight> ws;
    ws.push_back(make_weight(GgmlType::kQ8_0, 96, cols, rng));
    ws.push_back(make_weight(GgmlType::kQ4_K, 40, cols, rng));
    ws.push_back(make_weight(GgmlType::kF16, 24, cols, rng));
    ws.push_back(make_weight(GgmlType::kQ6_K, 17, cols, rng));
    return ws;
}

// matmul_group (Q, K and V in one parallel region, mixed types) equals one matmul per weight,
// in both activation modes, for decode and prefill token counts.
TEST(MatmulQ8, GroupEqualsSeparateMatmuls) {
    std::mt19937_64 rng(23);
    ThreadPool pool(3);
    const int64_t cols = 512;
    const std::vector<Weight> ws = mixed_weights(cols, rng);
    for (ActQuant aq : {ActQuant::kNone, ActQuant::kQ8}) {
        for (int64_t n : {1, 2, 5, 37}) {
            const int64_t ldx = cols + 1;
            const auto x = random_x(n, ldx, rng);
            std::vector<std::vector<float>> ref(ws.size()), got(ws.size());
            std::vector<MatmulOut> outs;
            for (size_t i = 0; i < ws.size(); ++i) {
                const int64_t ldy = ws[i].rows + 1;
                ref[i].assign(n * ldy, 0.f);
                got[i].assign(n * ldy, -1.f);
                matmul(ws[i].m, x.data(), ldx, ref[i].data(), ldy, n, pool, aq);
                outs.push_back({&ws[i].m, got[i].data(), ldy});
            }
            matmul_group(outs.data(), static_cast<int>(outs.size()), x.data(), ldx, n, pool, aq);
            for (size_t i = 0; i < ws.size(); ++i)
                for (int64_t t = 0; t < n; ++t)
                    ASSERT_EQ(first_bit_diff(got[i].data() + t * outs[i].ldy, ref[i].data() + t * outs[i].ldy,
                                             ws[i].rows),
                              -1)
                        << "weight " << i << " n " << n << " aq " << static_cast<int>(aq);
        }
    }
    MatmulOut bad[2] = {{&ws[0].m, nullptr, 97}, {&ws[0].m, nullptr, 97}};
    Weight other = make_weight(GgmlType::kQ8_0, 8, 256, rng);
    bad[1].w = &other.m;
    std::vector<float> y(97 * 4);
    bad[0].y = bad[1].y = y.data();
    const auto x = random_x(1, cols, rng);
    EXPECT_THROW(matmul_group(bad, 2, x.data(), cols, 1, pool), Error);
}

// NextWeights (the hint for the memory stream): whatever weights it names (repacked or the file
// layout, any type, the weight itself, several) every result keeps its bits; and the pool's
// threads do prefetch from them while they wait.
TEST(MatmulQ8, NextWeightsHintChangesNoBits) {
    std::mt19937_64 rng(29);
    ThreadPool pool(2);
    const int64_t cols = 512;
    const std::vector<Weight> ws = mixed_weights(cols, rng);
    Matrix::Options rep;
    rep.repack_q8 = true;
    std::vector<Matrix> ms;
    for (const Weight& w : ws) ms.push_back(w.m);
    for (const Weight& w : ws) ms.push_back(Matrix::prepare(w.m.view(), rep));
    std::vector<NextWeights> hints(4);
    hints[1].n = 1;
    hints[1].w[0] = &ms[4];  // repacked Q8_0
    hints[2].n = 4;
    for (int i = 0; i < 4; ++i) hints[2].w[i] = &ms[4 + i];  // a group, repacked
    hints[3].n = 2;
    hints[3].w[0] = &ms[2];  // F16 file layout
    hints[3].w[1] = &ms[1];
    for (ActQuant aq : {ActQuant::kNone, ActQuant::kQ8}) {
        for (int64_t n : {1, 5, 37}) {
            const auto x = random_x(n, cols, rng);
            for (size_t i = 0; i < ms.size(); ++i) {
                const int64_t rows = ms[i].rows();
                std::vector<float> ref(n * rows), got(n * rows);
                matmul(ms[i], x.data(), cols, ref.data(), rows, n, pool, aq);
                NextWeights self;
                self.n = 1;
                self.w[0] = &ms[i];
                for (const NextWeights* h : std::vector<const NextWeights*>{&hints[1], &hints[2], &hints[3], &self}) {
                    std::fill(got.begin(), got.end(), -1.f);
                    matmul(ms[i], x.data(), cols, got.data(), rows, n, pool, aq, h);
                    ASSERT_EQ(first_bit_diff(got.data(), ref.data(), n * rows), -1)
                        << "weight " << i << " n " << n << " aq " << static_cast<int>(aq);
                }
                MatmulOut out = {&ms[i], got.data(), rows};
                std::fill(got.begin(), got.end(), -1.f);
                matmul_group(&out, 1, x.data(), cols, n, pool, aq, &hints[2]);
                ASSERT_EQ(first_bit_diff(got.data(), ref.data(), n * rows), -1) << "group, weight " << i;
            }
        }
    }
    // 96 rows x 512 columns x 37 tokens wake the pool: the worker prefetched its share of the hint
    // after its part (the caller then waits here, so the worker has the time).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (pool.idle_prefetched(1) == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_GT(pool.idle_prefetched(1), 0u);
}

// Activation quantization: AVX2 == scalar == the contract, including round-half-even ties,
// zero blocks, the half sums of hs and the zero padding of d, s and hs.
TEST(MatmulQ8, ActivationQuantization) {
    const int64_t K = 96, ldd = 8;
    std::vector<float> x(K);
    for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 2 ? -i : i) * 0.5f;  // ties (amax 15.5)
    x[0] = 127.f;                                                                     // d = 1: x/d exact
    for (int i = 32; i < 64; ++i) x[i] = 0.f;                                         // d = 0
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nd(0.f, 3.f);
    for (int i = 64; i < 96; ++i) x[i] = nd(rng);
    std::vector<int8_t> q1(K), q2(K);
    std::vector<float> d1(ldd, -1), s1(ldd, -1), d2(ldd, -1), s2(ldd, -1);
    std::vector<int32_t> hs1(ldd, -1), hs2(ldd, -1);
    detail::quantize_act_q8_scalar(x.data(), K, ldd, q1.data(), d1.data(), s1.data(), hs1.data());
    EXPECT_EQ(d1[0], 1.f);
    for (int i = 1; i < 32; ++i) {
        const float v = static_cast<float>(i % 2 ? -i : i) * 0.5f;
        EXPECT_EQ(q1[i], static_cast<int8_t>(std::nearbyint(v))) << i;  // 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    }
    EXPECT_EQ(q1[5], -2);  // -2.5 -> -2
    EXPECT_EQ(d1[1], 0.f);
    for (int i = 32; i < 64; ++i) EXPECT_EQ(q1[i], 0);
    for (int64_t b = 3; b < ldd; ++b) EXPECT_TRUE(d1[b] == 0.f && s1[b] == 0.f);
    int sum = 0;
    for (int i = 64; i < 96; ++i) sum += q1[i];
    EXPECT_EQ(s1[2], d1[2] * static_cast<float>(sum));
    for (int64_t b = 0; b < ldd; ++b) {  // int16 pair (Σ q[0..16), Σ q[16..32)), zero past K/32
        int lo = 0, hi = 0;
        for (int i = 0; i < 16 && b < K / 32; ++i) {
            lo += q1[32 * b + i];
            hi += q1[32 * b + 16 + i];
        }
        EXPECT_EQ(static_cast<int16_t>(hs1[b] & 0xFFFF), lo) << "block " << b;
        EXPECT_EQ(hs1[b] >> 16, hi) << "block " << b;
    }
    if (force_cpu_isa("avx2")) {
        force_cpu_isa("auto");
        detail::quantize_act_q8_avx2(x.data(), K, ldd, q2.data(), d2.data(), s2.data(), hs2.data());
        EXPECT_EQ(hs1, hs2);
        EXPECT_EQ(q1, q2);
        EXPECT_EQ(first_bit_diff(d1.data(), d2.data(), ldd), -1);
        EXPECT_EQ(first_bit_diff(s1.data(), s2.data(), ldd), -1);
    }
}

// kQ8 falls back to the exact path for float weights and for the types without an integer
// kernel; results are then bit-identical to kNone.
TEST(MatmulQ8, FallbackAndSupport) {
    std::mt19937_64 rng(7);
    ThreadPool pool(2);
    for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16}) {
        EXPECT_FALSE(act_quant_supported(type));
        Weight w = make_weight(type, 9, 64, rng);
        const auto x = random_x(3, 64, rng);
        std::vector<float> a(27), b(27);
        matmul(w.m, x.data(), 64, a.data(), 9, 3, pool, ActQuant::kNone);
        matmul(w.m, x.data(), 64, b.data(), 9, 3, pool, ActQuant::kQ8);
        EXPECT_EQ(first_bit_diff(a.data(), b.data(), 27), -1) << ggml_type_name(type);
    }
    EXPECT_FALSE(act_quant_supported(GgmlType::kQ3_K));
}

}  // namespace
}  // namespace pipelm::kernels
