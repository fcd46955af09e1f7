// The quantized weight types on the device (kernels/cuda/quant.cuh): dequantize_rows and the
// embedding bit for bit against kernels::dequantize_row for all 13 weight types, on random block
// bytes (every bit pattern, finite fp16 scales) and on quantized values; matmul (GEMV for
// n <= 8, dequantized row chunks + FP32 cuBLAS above) against the CPU's exact matmul.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "runtime/base/thread_pool.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/kernels/kernels_test_util.h"

namespace pipelm::cudatest {
namespace {

using kernels::cuda::Accum;
namespace kt = kernels::testing;

class CudaQuant : public DeviceTest {};

// The nine block types beyond q8_0 that the device reads since issue 6, and q8_0.
const std::vector<GgmlType>& block_types() {
    static const std::vector<GgmlType> v = {GgmlType::kQ4_0, GgmlType::kQ4_1,   GgmlType::kQ5_0, GgmlType::kQ5_1,
                                            GgmlType::kQ8_0, GgmlType::kIQ4_NL, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                            GgmlType::kQ6_K, GgmlType::kIQ4_XS};
    return v;
}

// Row lengths per type: 32-value types also at 96 and 4128 (not multiples of 256), float types
// at odd lengths.
std::vector<int64_t> row_lengths(GgmlType type) {
    const int64_t qk = ggml_type_info(type).block;
    if (qk == 1) return {1, 97, 4128};
    if (qk == 32) return {32, 96, 4128};
    return {256, 4352};
}

// rows x cols of `type`, row_stride bytes apart (>= the row's bytes): even rows random block
// bytes with finite fp16 scales of any exponent (every bit pattern of the codes and scales),
// odd rows quantized N(0, 1) values.
std::vector<uint8_t> mixed_rows(GgmlType type, int64_t rows, int64_t cols, size_t row_stride, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const size_t rb = ggml_row_bytes(type, cols);
    std::vector<uint8_t> out(row_stride * rows, 0);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> v(cols);
    for (int64_t r = 0; r < rows; ++r) {
        if (r % 2 == 0) {
            const auto row = kt::random_row(type, cols, rng);
            std::memcpy(out.data() + r * row_stride, row.data(), rb);
        } else {
            for (auto& x : v) x = nd(rng);
            kernels::quantize_row(type, v.data(), out.data() + r * row_stride, cols);
        }
    }
    return out;
}

// dequantize_rows (dense and strided destination, padded source rows) and the embedding equal
// kernels::dequantize_row bit for bit.
TEST_F(CudaQuant, DequantizeAndEmbeddingAreBitExactForEveryType) {
    const int64_t rows = 9;
    for (GgmlType type : kt::all_types()) {
        ASSERT_TRUE(kc::weight_type_supported(type)) << ggml_type_name(type);
        for (int64_t cols : row_lengths(type)) {
            const size_t rb = ggml_row_bytes(type, cols);
            for (size_t pad : {size_t(0), size_t(8)}) {  // source row stride rb or rb + 8
                const size_t stride = rb + pad;
                const auto src = mixed_rows(type, rows, cols, stride, 1000 + cols + pad + static_cast<uint64_t>(type));
                std::vector<float> ref(rows * cols);
                for (int64_t r = 0; r < rows; ++r)
                    kernels::dequantize_row(type, src.data() + r * stride, &ref[r * cols], cols);
                auto dsrc = to_device(src);
                const std::string what = std::string(ggml_type_name(type)) + " cols " + std::to_string(cols) +
                                         " src pad " + std::to_string(pad);
                for (int64_t ldd : {cols, cols + 1}) {  // 16-byte stores, scalar stores
                    auto dd = poisoned(rows * ldd);
                    kc::dequantize_rows(type, dsrc.get(), stride, rows, cols, dd.as<float>(), ldd, stream);
                    const auto got = to_host<float>(dd, rows * ldd);
                    for (int64_t r = 0; r < rows; ++r) {
                        const int64_t i = kt::first_bit_diff(&got[r * ldd], &ref[r * cols], cols);
                        EXPECT_EQ(i, -1) << what << " ldd " << ldd << " row " << r << " value " << i << ": device "
                                         << got[r * ldd + std::max<int64_t>(i, 0)] << " cpu "
                                         << ref[r * cols + std::max<int64_t>(i, 0)];
                    }
                }
                const std::vector<int32_t> ids = {3, 0, 8, 3, 5};
                auto dids = to_device(ids);
                auto de = poisoned(ids.size() * cols);
                kc::embedding(type, dsrc.get(), stride, dids.as<int32_t>(), static_cast<int64_t>(ids.size()), cols,
                              de.as<float>(), stream);
                const auto e = to_host<float>(de, ids.size() * cols);
                for (size_t t = 0; t < ids.size(); ++t)
                    EXPECT_EQ(kt::first_bit_diff(&e[t * cols], &ref[ids[t] * cols], cols), -1)
                        << what << " token " << t;
            }
        }
    }
}

// matmul vs kernels::matmul(ActQuant::kNone) (the exact weights, FP32) for every block type:
// GEMV for n = 1, 3, 8 (decoded in registers), dequantized row chunks + FP32 SGEMM for n = 64;
// x with 16-byte rows and with odd strides (scalar loads), y strided. Both sides multiply the
// same exact weights with FP32 accumulation; only the order of the additions differs (CPU: 8
// lanes in k order; GEMV: 32 lanes x 8, butterfly; cuBLAS: its own tiling), which for K <= 4352
// and these magnitudes stays ~1e-7..1e-6 relative L2 per row: bound 1e-5, as for f32 / q8_0.
TEST_F(CudaQuant, MatmulMatchesCpuExactForEveryBlockType) {
    kc::CublasHandle blas(stream);
    const int64_t M = 37;
    for (GgmlType type : block_types()) {
        const int64_t qk = ggml_type_info(type).block;
        const std::vector<int64_t> ks = qk == 32 ? std::vector<int64_t>{96, 4128} : std::vector<int64_t>{256, 4352};
        for (int64_t K : ks) {
            for (bool random_bytes : {false, true}) {
                // Random block bytes with fp16 scales below 1 (emax 14): every code pattern, finite sums.
                std::mt19937_64 rng(7 + K + static_cast<uint64_t>(type) * 131 + random_bytes);
                const kt::Weight w = kt::make_weight(type, M, K, rng, random_bytes, 14);
                auto dw = to_device(w.data);
                const kc::DeviceWeight dwv{type, dw.get(), M, K, ggml_row_bytes(type, K)};
                for (int64_t n : {1, 3, 8, 64}) {
                    for (int64_t pad : {0, 1}) {
                        const int64_t ldx = K + pad, ldy = M + 3;
                        const auto x = random_vec(n * ldx, static_cast<uint32_t>(71 + n + pad + K), -2.f, 2.f);
                        std::vector<float> ref(n * ldy, 0.f);
                        kernels::matmul(w.m, x.data(), ldx, ref.data(), ldy, n, pool, kernels::ActQuant::kNone);
                        auto dx = to_device(x);
                        auto dy = poisoned(n * ldy);
                        const size_t wsb = kc::matmul_workspace_bytes(dwv, n, Accum::kF32);
                        kc::DeviceBuffer ws(std::max<size_t>(wsb, 1), "workspace");
                        kc::matmul(blas.get(), dwv, dx.as<float>(), ldx, dy.as<float>(), ldy, n, Accum::kF32, ws.get(),
                                   wsb, stream);
                        const auto y = to_host<float>(dy, n * ldy);
                        double worst = 0;
                        for (int64_t t = 0; t < n; ++t)
                            worst = std::max(worst, row_rel_l2(&y[t * ldy], &ref[t * ldy], M));
                        EXPECT_LE(worst, 1e-5) << ggml_type_name(type) << " K " << K << " n " << n << " pad " << pad
                                               << " random bytes " << random_bytes;
                    }
                }
                // The GEMV kernel alone on 19 tokens (chunks of kGemvMaxTokens) equals the matmul rows.
                const int64_t n = 19;
                const auto x = random_vec(n * K, 81);
                std::vector<float> ref(n * M);
                kernels::matmul(w.m, x.data(), K, ref.data(), M, n, pool, kernels::ActQuant::kNone);
                auto dx = to_device(x);
                auto dy = poisoned(n * M);
                kc::gemv(dwv, dx.as<float>(), K, dy.as<float>(), M, n, stream);
                const auto y = to_host<float>(dy, n * M);
                for (int64_t t = 0; t < n; ++t)
                    EXPECT_LE(row_rel_l2(&y[t * M], &ref[t * M], M), 1e-5)
                        << "gemv " << ggml_type_name(type) << " K " << K << " token " << t;
            }
        }
    }
}

// Rows that are not whole blocks, or misaligned data, are refused with the reason (no launch).
TEST_F(CudaQuant, BadBlockRowsAreRefused) {
    kc::DeviceBuffer buf(4096, "rows");
    auto out = poisoned(1024);
    EXPECT_THROW(kc::dequantize_rows(GgmlType::kQ4_K, buf.get(), 144, 1, 128, out.as<float>(), 128, stream), Error);
    EXPECT_THROW(kc::dequantize_rows(GgmlType::kQ4_K, buf.as<uint8_t>() + 4, 144, 1, 256, out.as<float>(), 256, stream),
                 Error);
    EXPECT_THROW(kc::dequantize_rows(GgmlType::kQ4_0, buf.get(), 10, 2, 32, out.as<float>(), 32, stream), Error);
    EXPECT_FALSE(kc::weight_type_supported(GgmlType::kQ2_K));
    EXPECT_THROW(kc::dequantize_rows(GgmlType::kQ2_K, buf.get(), 84, 1, 256, out.as<float>(), 256, stream), Error);
}

}  // namespace
}  // namespace pipelm::cudatest
