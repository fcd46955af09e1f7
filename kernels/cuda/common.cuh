// Device-side helpers shared by the .cu files: warp/block reductions, element loads of the
// float weight types (f32, f16, bf16; the block types are decoded by quant.cuh), grid sizing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "runtime/base/ggml_types.h"

namespace pipelm::kernels::cuda::detail {

constexpr unsigned kFullMask = 0xffffffffu;

inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > max_blocks) b = max_blocks;
    return static_cast<unsigned>(b);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    return v;
}
__device__ __forceinline__ __half warp_sum(__half v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __hadd(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}
__device__ __forceinline__ __nv_bfloat16 warp_sum(__nv_bfloat16 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __hadd(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}

// Block-wide sum / max; every thread gets the same value (same order in every warp). Call from
// all threads of the block (it synchronizes); blockDim.x a multiple of 32.
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // part[] may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    return warp_sum(lane < n_warps ? part[lane] : T(0));
}
__device__ inline float block_max(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    return warp_max(lane < n_warps ? part[lane] : -INFINITY);
}

__device__ __forceinline__ float bf16_bits_to_f32(uint32_t bits16) { return __uint_as_float(bits16 << 16); }
__device__ __forceinline__ float f16_bits_to_f32(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

// Element c of a row of `type` (f32, f16, bf16), exactly as kernels::dequantize_row.
__device__ __forceinline__ float load_element(GgmlType type, const uint8_t* row, int64_t c) {
    switch (type) {
        case GgmlType::kF32: return reinterpret_cast<const float*>(row)[c];
        case GgmlType::kF16: return f16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
        case GgmlType::kBF16: return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
        default: return __int_as_float(0x7fc00000);  // a block type: NaN (callers route those to quant.cuh)
    }
}

}  // namespace pipelm::kernels::cuda::detail
