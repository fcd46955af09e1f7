// Row-wise argmax of logits (greedy sampling on the device): the first index of the largest
// value, NaNs ignored, as the CPU sampler's strict `>` scan. One block per row.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// (v, i) beats (bv, bi) when larger, or equal with a smaller index. i < 0 marks "none".
__device__ __forceinline__ bool better(float v, int64_t i, float bv, int64_t bi) {
    if (i < 0) return false;
    if (bi < 0) return true;
    return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kThreads)
argmax_kernel(const float* __restrict__ x, int64_t ld, int64_t n, int32_t* __restrict__ out) {
    __shared__ float sv[32];
    __shared__ int64_t si[32];
    const float* xr = x + blockIdx.x * ld;
    float bv = 0.f;
    int64_t bi = -1;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i];
        if (!isnan(v) && better(v, i, bv, bi)) bv = v, bi = i;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(detail::kFullMask, bv, o);
        const int64_t i = __shfl_xor_sync(detail::kFullMask, bi, o);
        if (better(v, i, bv, bi)) bv = v, bi = i;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        bv = lane < (blockDim.x >> 5) ? sv[lane] : 0.f;
        bi = lane < (blockDim.x >> 5) ? si[lane] : -1;
        for (int o = 16; o > 0; o >>= 1) {
            const float v = __shfl_xor_sync(detail::kFullMask, bv, o);
            const int64_t i = __shfl_xor_sync(detail::kFullMask, bi, o);
            if (better(v, i, bv, bi)) bv = v, bi = i;
        }
        if (lane == 0) out[blockIdx.x] = static_cast<int32_t>(bi < 0 ? 0 : bi);
    }
}

}  // namespace

void argmax_rows(const float* x, int64_t ld, int64_t n_rows, int64_t n, int32_t* out, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    const LaunchConfig& lc = detail::checked(row_launch("argmax", n_rows, kThreads));
    argmax_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(x, ld, n, out);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
