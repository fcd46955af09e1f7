// Weight and activation conversions around the GEMMs:
//  - dequantize_rows: rows of any weight type (f32, f16, bf16 and the block types of quant.cuh)
//    -> F32, bit-exact with kernels::dequantize_row (block-type prefill: the exact F32 weights of
//    a row chunk, then an FP32 GEMM);
//  - split_16: F32 activations -> hi (+ lo) 16-bit halves for cuBLAS 16-bit GEMMs. hi + lo keeps
//    >= 16 significant bits (bf16) / >= 21 (f16), so a bf16/f16-weight GEMM with FP32 accumulation
//    matches the F32 forward of the same weights (single rounding to bf16 costs ~2e-2 on the
//    61-layer test model, to f16 ~2e-3: llama.cpp's numbers in tests/data). FP16 rows are
//    scaled by a power of two (exact) so that |x| <= 1: GLM-4 activations exceed 65504;
//  - scale_rows / f16_to_f32: the epilogues of those GEMMs.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/quant.cuh"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
dequantize_kernel(GgmlType type, const uint8_t* __restrict__ src, size_t row_bytes, int64_t n_cols,
                  float* __restrict__ dst, int64_t ldd) {
    const uint8_t* row = src + blockIdx.x * row_bytes;
    float* d = dst + blockIdx.x * ldd;
    for (int64_t c = threadIdx.x; c < n_cols; c += blockDim.x) d[c] = detail::load_element(type, row, c);
}

// Block types: one block per row, each thread decodes 8 consecutive values (one scale) and
// stores them with two 16-byte stores when `vec` (dst 16-byte aligned, ldd % 4 == 0).
template <GgmlType T>
__global__ void __launch_bounds__(kThreads)
dequantize_block_kernel(const uint8_t* __restrict__ src, size_t row_bytes, int64_t n_cols, float* __restrict__ dst,
                        int64_t ldd, bool vec) {
    const uint8_t* row = src + blockIdx.x * row_bytes;
    float* d = dst + blockIdx.x * ldd;
    for (int64_t c = 8 * threadIdx.x; c < n_cols; c += 8 * blockDim.x) {
        float v[8];
        detail::decode8_at<T>(row, c, v);
        detail::store8(d + c, v, vec);
    }
}

__device__ __forceinline__ void store16(__nv_bfloat16* p, float v, float* rounded) {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    *p = h;
    *rounded = __bfloat162float(h);
}
__device__ __forceinline__ void store16(__half* p, float v, float* rounded) {
    const __half h = __float2half_rn(v);
    *p = h;
    *rounded = __half2float(h);
}

template <typename T16>
__global__ void __launch_bounds__(kThreads)
split_kernel(const float* __restrict__ x, int64_t ldx, int64_t n, T16* __restrict__ hi, T16* __restrict__ lo,
             float* __restrict__ scale) {
    const int64_t r = blockIdx.x;
    const float* xr = x + r * ldx;
    float inv = 1.f;
    if (scale) {
        float amax = 0.f;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) amax = fmaxf(amax, fabsf(xr[i]));
        amax = detail::block_max(amax);
        int e = 0;
        if (amax > 0.f && isfinite(amax)) (void)frexpf(amax, &e);  // amax = m 2^e, m in [0.5, 1): amax <= 2^e
        e = min(e, 127);                                            // 2^128 is not a float
        if (threadIdx.x == 0) scale[r] = ldexpf(1.f, e);
        inv = ldexpf(1.f, -e);
    }
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = __fmul_rn(xr[i], inv);  // exact: a power of two
        float h;
        store16(hi + r * n + i, v, &h);
        if (lo) {
            float unused;
            store16(lo + r * n + i, __fsub_rn(v, h), &unused);  // v - h is exact in FP32
        }
    }
}

__global__ void __launch_bounds__(kThreads)
scale_rows_kernel(float* y, int64_t ld, int64_t n, const float* __restrict__ scale) {
    float* yr = y + blockIdx.x * ld;
    const float s = scale[blockIdx.x];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = __fmul_rn(yr[i], s);
}

__global__ void __launch_bounds__(kThreads)
f16_to_f32_kernel(const __half* __restrict__ src, int64_t lds, float* __restrict__ dst, int64_t ldd, int64_t n) {
    const __half* s = src + blockIdx.x * lds;
    float* d = dst + blockIdx.x * ldd;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) d[i] = __half2float(s[i]);
}

void check_rows(int64_t n_rows, const char* op) {
    PIPELM_CHECK(n_rows <= 0x7fffffff, op, ": ", n_rows, " rows is too many for one launch");
}

}  // namespace

bool weight_type_supported(GgmlType type) {
    return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16 ||
           detail::block_values(type) > 0;
}

void dequantize_rows(GgmlType type, const void* src, size_t row_bytes, int64_t n_rows, int64_t n_cols, float* dst,
                     int64_t ldd, cudaStream_t stream) {
    if (n_rows <= 0 || n_cols <= 0) return;
    PIPELM_CHECK(weight_type_supported(type), "CUDA dequantize: type ", ggml_type_name(type),
                 " is not a device weight type (", supported_ggml_types(), ")");
    check_rows(n_rows, "dequantize_rows");
    const unsigned grid = static_cast<unsigned>(n_rows);
    const auto* s = static_cast<const uint8_t*>(src);
    const bool block = detail::visit_block_type(type, [&](auto tag) {
        constexpr GgmlType T = decltype(tag)::value;
        detail::check_block_rows(T, src, row_bytes, n_cols, "dequantize_rows");
        const bool vec = reinterpret_cast<uintptr_t>(dst) % 16 == 0 && ldd % 4 == 0;
        dequantize_block_kernel<T><<<grid, kThreads, 0, stream>>>(s, row_bytes, n_cols, dst, ldd, vec);
    });
    if (!block) dequantize_kernel<<<grid, kThreads, 0, stream>>>(type, s, row_bytes, n_cols, dst, ldd);
    PIPELM_CUDA_CHECK_LAUNCH();
}

void split_16(GgmlType type16, const float* x, int64_t ldx, int64_t n_rows, int64_t n, void* hi, void* lo,
              float* scale, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    check_rows(n_rows, "split_16");
    const unsigned grid = static_cast<unsigned>(n_rows);
    if (type16 == GgmlType::kBF16)
        split_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(x, ldx, n, static_cast<__nv_bfloat16*>(hi),
                                                                    static_cast<__nv_bfloat16*>(lo), scale);
    else if (type16 == GgmlType::kF16)
        split_kernel<__half><<<grid, kThreads, 0, stream>>>(x, ldx, n, static_cast<__half*>(hi), static_cast<__half*>(lo),
                                                            scale);
    else
        PIPELM_THROW(ErrorCode::kInvalidArgument, "split_16: type ", ggml_type_name(type16), " is not bf16 or f16");
    PIPELM_CUDA_CHECK_LAUNCH();
}

void scale_rows(float* y, int64_t ld, int64_t n_rows, int64_t n, const float* scale, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    check_rows(n_rows, "scale_rows");
    scale_rows_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(y, ld, n, scale);
    PIPELM_CUDA_CHECK_LAUNCH();
}

void f16_to_f32(const void* src, int64_t lds, float* dst, int64_t ldd, int64_t n_rows, int64_t n, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    check_rows(n_rows, "f16_to_f32");
    f16_to_f32_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(static_cast<const __half*>(src), lds, dst,
                                                                              ldd, n);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
