// Weight and activation conversions around the GEMMs:
//  - dequantize_rows: rows of any weight type (f32, f16, bf16 and the block types of quant.cuh)
//    -> F32, bit-exact with kernels::dequantize_row (prefill with any non-f32 weight: the exact
//    F32 weights of a row chunk, then an FP32 GEMM);
//  - split_16: F32 activations rounded once to bf16 / f16 for the 16-bit cuBLAS GEMMs of the
//    reduced-precision demonstrations (Accum::kBF16 / kF16). FP16 rows are scaled by a power of
//    two (exact) so that |x| <= 1: GLM-4 activations exceed 65504;
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

// f16 / bf16 rows whose source and destination allow 16-byte accesses (row_bytes and the
// pointers 16-byte aligned, n_cols a multiple of 8, ldd of 4): each thread widens 8 values (one
// 16-byte load, quant.cuh unpack16) and stores them with two 16-byte stores.
template <detail::FloatKind K>
__global__ void __launch_bounds__(kThreads)
dequantize16_kernel(const uint8_t* __restrict__ src, size_t row_bytes, int64_t n_cols, float* __restrict__ dst,
                    int64_t ldd) {
    const uint4* row = reinterpret_cast<const uint4*>(src + blockIdx.x * row_bytes);
    float* d = dst + blockIdx.x * ldd;
    for (int64_t i = threadIdx.x; 8 * i < n_cols; i += blockDim.x) {
        const uint4 u = __ldg(row + i);
        const uint32_t words[4] = {u.x, u.y, u.z, u.w};
        float v[8];
        detail::unpack16<K>(words, v);
        detail::store8(d + 8 * i, v, true);
    }
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

__device__ __forceinline__ uint16_t round16(GgmlType type16, float v) {
    return type16 == GgmlType::kBF16 ? hd::f32_to_bf16(v) : hd::f32_to_f16(v);
}

__global__ void __launch_bounds__(kThreads)
split_kernel(GgmlType type16, const float* __restrict__ x, int64_t ldx, int64_t n, uint16_t* __restrict__ out,
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
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[r * n + i] = round16(type16, hd::mul(xr[i], inv));
}

__global__ void __launch_bounds__(kThreads)
scale_rows_kernel(float* y, int64_t ld, int64_t n, const float* __restrict__ scale) {
    float* yr = y + blockIdx.x * ld;
    const float s = scale[blockIdx.x];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = hd::mul(yr[i], s);
}

__global__ void __launch_bounds__(kThreads)
f16_to_f32_kernel(const uint16_t* __restrict__ src, int64_t lds, float* __restrict__ dst, int64_t ldd, int64_t n) {
    const uint16_t* s = src + blockIdx.x * lds;
    float* d = dst + blockIdx.x * ldd;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) d[i] = hd::f16_to_f32(s[i]);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

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
    const LaunchConfig& lc = detail::checked(row_launch("dequantize", n_rows, kThreads));
    const dim3 grid = detail::to_dim3(lc.grid), block = detail::to_dim3(lc.block);
    const auto* s = static_cast<const uint8_t*>(src);
    const bool is_block = detail::visit_block_type(type, [&](auto tag) {
        constexpr GgmlType T = decltype(tag)::value;
        detail::check_block_rows(T, src, row_bytes, n_cols, "dequantize_rows");
        const bool vec = aligned16(dst) && ldd % 4 == 0;
        dequantize_block_kernel<T><<<grid, block, 0, stream>>>(s, row_bytes, n_cols, dst, ldd, vec);
    });
    const bool vec16 = (type == GgmlType::kF16 || type == GgmlType::kBF16) && aligned16(src) && row_bytes % 16 == 0 &&
                       n_cols % 8 == 0 && aligned16(dst) && ldd % 4 == 0;
    if (!is_block && vec16 && type == GgmlType::kF16)
        dequantize16_kernel<detail::FloatKind::kF16><<<grid, block, 0, stream>>>(s, row_bytes, n_cols, dst, ldd);
    else if (!is_block && vec16)
        dequantize16_kernel<detail::FloatKind::kBF16><<<grid, block, 0, stream>>>(s, row_bytes, n_cols, dst, ldd);
    else if (!is_block)
        dequantize_kernel<<<grid, block, 0, stream>>>(type, s, row_bytes, n_cols, dst, ldd);
    PIPELM_CUDA_CHECK_LAUNCH();
}

void split_16(GgmlType type16, const float* x, int64_t ldx, int64_t n_rows, int64_t n, void* out, float* scale,
              cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    PIPELM_CHECK(type16 == GgmlType::kBF16 || type16 == GgmlType::kF16, "split_16: type ", ggml_type_name(type16),
                 " is not bf16 or f16");
    const LaunchConfig& lc = detail::checked(row_launch("split_16", n_rows, kThreads));
    split_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(
        type16, x, ldx, n, static_cast<uint16_t*>(out), scale);
    PIPELM_CUDA_CHECK_LAUNCH();
}

void scale_rows(float* y, int64_t ld, int64_t n_rows, int64_t n, const float* scale, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    const LaunchConfig& lc = detail::checked(row_launch("scale_rows", n_rows, kThreads));
    scale_rows_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(y, ld, n, scale);
    PIPELM_CUDA_CHECK_LAUNCH();
}

void f16_to_f32(const void* src, int64_t lds, float* dst, int64_t ldd, int64_t n_rows, int64_t n, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    const LaunchConfig& lc = detail::checked(row_launch("f16_to_f32", n_rows, kThreads));
    f16_to_f32_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(
        static_cast<const uint16_t*>(src), lds, dst, ldd, n);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
