// Numerics of the CUDA matmul with GLM-like activation outliers, emulated on the host without a
// GPU. GLM-4 keeps a few channels 1e3-1e5 times larger than the typical activation through its
// RMSNorms; attn_output and ffn_down must stay FP32-accurate on them (the model's precision
// policy). For each weight type, batch size and outlier ratio the test emulates the path the
// device takes (launch.h matmul_path, Accum::kF32): the same split of the work, the same
// rounding functions (hd.h conversions, quant.cuh decoders: the device's bits), FP32
// accumulation (FMA); and compares it with the exact product (double, exact weights).
//   kGemv: the GEMV kernel's order exactly (lane l takes the 8-value groups g ≡ l mod 32, FMA
//     in order, then the xor-butterfly over the warp);
//   kDequantSgemm / kSgemm: exact F32 weights, then an FP32 GEMM (modelled as one FMA chain per
//     output: cuBLAS's blocking differs, its rounding error is of the same FP32 size).
// The counter-example: the former prefill path of f16 / bf16 weights split each token row into
// 16-bit hi + lo (f16: under one power-of-two scale per row) for two 16-bit GEMMs. With
// outliers, the scale is set by the outlier and the typical values fall to f16 subnormals,
// whose absolute step 2^-24 · scale is a large part of them: FP32's accuracy is lost.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/hd.h"
#include "kernels/cuda/launch.h"
#include "kernels/quant.h"

namespace pipelm::cudatest {
namespace {

namespace hd = kernels::cuda::hd;
namespace kc = kernels::cuda;

// The FP32 policy for one matmul output row: relative L2 error against the exact product. An
// FP32 GEMM over these inputs reaches 2e-6 at K = 6144 and up to 7e-6 at K = 23040 when modelled
// as one FMA chain (the pessimistic order; printed below): the policy allows ~3x that.
constexpr double kFp32Policy = 2e-5;

struct Problem {
    int64_t rows = 16, cols = 0, n = 0;
    std::vector<float> w;  // [rows][cols] the exact stored weights (dequantized)
    std::vector<float> x;  // [n][cols]
};

// Activations: N(0, 1) with four outlier channels at ±ratio·[1, 2) (none for ratio 1). Weights of
// `type`: N(0, 1/sqrt(cols)), quantized as a file would hold them; with `damped`, the outlier
// channels' weights are divided by the ratio (the product then does not drown the other
// channels: the case that needs every channel's precision).
Problem make_problem(GgmlType type, int64_t cols, int64_t n, double ratio, bool damped, uint32_t seed) {
    Problem p;
    p.cols = cols;
    p.n = n;
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> u(1.f, 2.f);
    const int64_t outliers[] = {17, cols / 3, cols / 2 + 5, cols - 3};
    p.x.resize(static_cast<size_t>(n * cols));
    for (auto& v : p.x) v = nd(rng);
    if (ratio > 1)
        for (int64_t t = 0; t < n; ++t)
            for (int64_t c : outliers)
                p.x[t * cols + c] = static_cast<float>(ratio) * u(rng) * (rng() & 1 ? 1.f : -1.f);
    std::vector<float> src(cols);
    std::vector<uint8_t> row(ggml_row_bytes(type, cols));
    p.w.resize(static_cast<size_t>(p.rows * cols));
    const float sd = 1.f / std::sqrt(static_cast<float>(cols));
    for (int64_t r = 0; r < p.rows; ++r) {
        for (auto& v : src) v = nd(rng) * sd;
        if (damped && ratio > 1)
            for (int64_t c : outliers) src[c] /= static_cast<float>(ratio);
        kernels::quantize_row(type, src.data(), row.data(), cols);
        kernels::dequantize_row(type, row.data(), p.w.data() + r * cols, cols);
    }
    return p;
}

// y[t][r], exact enough: double products and sums.
std::vector<double> exact(const Problem& p) {
    std::vector<double> y(static_cast<size_t>(p.n * p.rows));
    for (int64_t t = 0; t < p.n; ++t)
        for (int64_t r = 0; r < p.rows; ++r) {
            double s = 0;
            for (int64_t c = 0; c < p.cols; ++c) s += static_cast<double>(p.w[r * p.cols + c]) * p.x[t * p.cols + c];
            y[t * p.rows + r] = s;
        }
    return y;
}

// The GEMV kernel's order (matmul.cu gemv_kernel / gemv_block_kernel with 8 values per lane step).
float gemv_dot(const float* w, const float* x, int64_t cols) {
    float lane[32] = {};
    for (int64_t g = 0; 8 * g < cols; ++g)
        for (int64_t c = 8 * g; c < std::min(cols, 8 * g + 8); ++c) lane[g % 32] = hd::fma(w[c], x[c], lane[g % 32]);
    for (int o = 16; o > 0; o >>= 1) {
        float v[32];
        for (int l = 0; l < 32; ++l) v[l] = hd::add(lane[l], lane[l ^ o]);
        std::copy(v, v + 32, lane);
    }
    return lane[0];
}

// An FP32 GEMM's output: one FMA chain in k order.
float fp32_dot(const float* w, const float* x, int64_t cols) {
    float acc = 0.f;
    for (int64_t c = 0; c < cols; ++c) acc = hd::fma(w[c], x[c], acc);
    return acc;
}

// The emulated device result of the path matmul_path() picks (Accum::kF32).
std::vector<float> device(const Problem& p, kc::MatmulPath path) {
    std::vector<float> y(static_cast<size_t>(p.n * p.rows));
    for (int64_t t = 0; t < p.n; ++t)
        for (int64_t r = 0; r < p.rows; ++r) {
            const float* w = &p.w[r * p.cols];
            const float* x = &p.x[t * p.cols];
            float v = 0.f;
            switch (path) {
                case kc::MatmulPath::kGemv: v = gemv_dot(w, x, p.cols); break;
                case kc::MatmulPath::kSgemm:
                case kc::MatmulPath::kDequantSgemm: v = fp32_dot(w, x, p.cols); break;
                case kc::MatmulPath::kGemm16: ADD_FAILURE() << "a 16-bit GEMM under the FP32 policy"; break;
            }
            y[t * p.rows + r] = v;
        }
    return y;
}

// The former 16-bit-weight prefill path (counter-example), or with hi_only the single rounding of
// the Accum::kF16 / kBF16 demonstrations: per token row, s = 2^e >= max |x| (f16 only, else 1),
// hi = round16(x / s), lo = round16(x / s - hi); y = s · (Σ w lo + Σ w hi) (two FP32-accumulated
// GEMMs, the second with beta = 1; 16-bit products are exact in FP32).
std::vector<float> split16(const Problem& p, GgmlType t16, bool hi_only) {
    const bool f16 = t16 == GgmlType::kF16;
    auto round16 = [&](float v) {
        return f16 ? hd::f16_to_f32(hd::f32_to_f16(v)) : hd::bf16_to_f32(hd::f32_to_bf16(v));
    };
    std::vector<float> y(static_cast<size_t>(p.n * p.rows)), hi(p.cols), lo(p.cols);
    for (int64_t t = 0; t < p.n; ++t) {
        const float* x = &p.x[t * p.cols];
        float amax = 0.f;
        for (int64_t c = 0; c < p.cols; ++c) amax = std::max(amax, std::fabs(x[c]));
        int e = 0;
        if (f16 && amax > 0.f) (void)std::frexp(amax, &e);
        const float inv = std::ldexp(1.f, -e), s = std::ldexp(1.f, e);
        for (int64_t c = 0; c < p.cols; ++c) {
            const float v = hd::mul(x[c], inv);
            hi[c] = round16(v);
            lo[c] = hi_only ? 0.f : round16(hd::sub(v, hi[c]));
        }
        for (int64_t r = 0; r < p.rows; ++r) {
            const float* w = &p.w[r * p.cols];
            const float a = fp32_dot(w, hi.data(), p.cols), b = fp32_dot(w, lo.data(), p.cols);
            y[t * p.rows + r] = hd::mul(hd::add(b, a), s);
        }
    }
    return y;
}

// max over tokens of ||y_t - ref_t|| / ||ref_t||.
double max_rel_l2(const std::vector<float>& y, const std::vector<double>& ref, int64_t n, int64_t rows) {
    double worst = 0;
    for (int64_t t = 0; t < n; ++t) {
        double d = 0, s = 0;
        for (int64_t r = 0; r < rows; ++r) {
            const double e = y[t * rows + r] - ref[t * rows + r];
            d += e * e;
            s += ref[t * rows + r] * ref[t * rows + r];
        }
        worst = std::max(worst, std::isfinite(d) ? std::sqrt(d / s) : INFINITY);
    }
    return worst;
}

const double kRatios[] = {1, 1e3, 1e4, 1e5};

// Every weight type, decode (GEMV) and prefill batches, attn_output's K (6144) and ffn_down's
// (23040) for GLM-4-32B: the path the device takes under the FP32 policy meets it at every
// outlier ratio.
TEST(CudaHostNumerics, MatmulPathsKeepFp32AccuracyWithActivationOutliers) {
    const GgmlType types[] = {GgmlType::kF16,  GgmlType::kBF16,   GgmlType::kF32,  GgmlType::kQ8_0, GgmlType::kQ4_0,
                              GgmlType::kQ4_1, GgmlType::kQ5_0,   GgmlType::kQ5_1, GgmlType::kIQ4_NL,
                              GgmlType::kQ4_K, GgmlType::kQ5_K,   GgmlType::kQ6_K, GgmlType::kIQ4_XS};
    for (GgmlType type : types) {
        const bool wide = type == GgmlType::kF16 || type == GgmlType::kBF16;
        for (int64_t cols : wide ? std::vector<int64_t>{6144, 23040} : std::vector<int64_t>{6144}) {
            for (int64_t n : {int64_t{4}, kc::kGemvMaxTokens + 4}) {
                const kc::MatmulPath path = kc::matmul_path(type, n, kc::Accum::kF32);
                std::printf("%-7s K %5lld n %2lld %-17s", ggml_type_name(type), static_cast<long long>(cols),
                            static_cast<long long>(n), kc::matmul_path_name(path));
                for (double ratio : kRatios) {
                    double worst = 0;
                    for (bool damped : {false, true}) {
                        const Problem p = make_problem(type, cols, n, ratio, damped, static_cast<uint32_t>(cols + n));
                        const double e = max_rel_l2(device(p, path), exact(p), p.n, p.rows);
                        worst = std::max(worst, e);
                        EXPECT_LE(e, kFp32Policy) << ggml_type_name(type) << " K " << cols << " n " << n << " path "
                                                  << kc::matmul_path_name(path) << " outliers x" << ratio
                                                  << (damped ? " (damped weights)" : "");
                    }
                    std::printf("  x%-6g %.2e", ratio, worst);
                }
                std::printf("\n");
            }
        }
    }
}

// The counter-example kept from the former prefill path of f16 / bf16 weights (split into hi +
// lo halves; f16 under one power-of-two scale per row): FP32-accurate without outliers, two to
// three orders of magnitude off with GLM-like ones. Also the single rounding of the reduced-
// precision demonstrations. None of them is on the FP32 policy's path any more
// (MatmulPathsKeepFp32AccuracyWithActivationOutliers, CudaHostLaunch.MatmulPathsAndWorkspaces...).
TEST(CudaHostNumerics, TheFormer16BitSplitFailsTheFp32PolicyWithOutliers) {
    for (GgmlType t16 : {GgmlType::kF16, GgmlType::kBF16}) {
        for (int64_t cols : {int64_t{6144}, int64_t{23040}}) {
            std::printf("split %-4s hi+lo K %5lld", ggml_type_name(t16), static_cast<long long>(cols));
            double at[4] = {}, single[4] = {};
            for (int i = 0; i < 4; ++i) {
                const Problem p = make_problem(t16, cols, 16, kRatios[i], true, static_cast<uint32_t>(cols));
                const auto ref = exact(p);
                at[i] = max_rel_l2(split16(p, t16, false), ref, p.n, p.rows);
                single[i] = max_rel_l2(split16(p, t16, true), ref, p.n, p.rows);
                std::printf("  x%-6g %.2e", kRatios[i], at[i]);
            }
            std::printf("   | single rounding x1 %.2e x1e5 %.2e\n", single[0], single[3]);
            if (t16 == GgmlType::kF16) {
                EXPECT_LE(at[0], kFp32Policy) << "no outliers: the f16 split is fine";
                EXPECT_GT(at[2], 10 * kFp32Policy) << "outliers x1e4 must break the f16 split";
                EXPECT_GT(at[3], 100 * kFp32Policy) << "outliers x1e5 must break the f16 split";
            }
            EXPECT_GT(single[0], kFp32Policy) << "single rounding to " << ggml_type_name(t16) << " is not FP32";
        }
    }
}

}  // namespace
}  // namespace pipelm::cudatest
