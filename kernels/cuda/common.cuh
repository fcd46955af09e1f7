// Device-side helpers shared by the .cu files: warp/block reductions, vector stores, and the
// launch helpers that turn a launch.h plan into <<<>>> arguments after checking it. The
// per-element math lives in host/device headers (hd.h, hd_math.h, quant.cuh).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/hd.h"
#include "kernels/cuda/launch.h"
#include "runtime/base/ggml_types.h"

namespace pipelm::kernels::cuda::detail {

constexpr unsigned kFullMask = 0xffffffffu;

// dim3 of a launch.h plan that launch_problem() accepted for the current device. The simple
// kernels (one block per row, grid-stride loops, no dynamic shared memory) check against the
// limits every CUDA device of this build shares (sm_80: the smaller one).
inline dim3 to_dim3(const Dim3& d) {
    return dim3(static_cast<unsigned>(d.x), static_cast<unsigned>(d.y), static_cast<unsigned>(d.z));
}
inline LaunchConfig checked(const LaunchConfig& c) {
    static const DeviceLimits limits = sm80_limits();
    check_launch(c, limits);
    return c;
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

// dst[0..8) = v[0..8): two 16-byte stores when `vec` (dst 16-byte aligned), else scalar ones.
__device__ __forceinline__ void store8(float* dst, const float (&v)[8], bool vec) {
    if (vec) {
        reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) dst[k] = v[k];
    }
}

}  // namespace pipelm::kernels::cuda::detail
