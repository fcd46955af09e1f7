// RMSNorm over the last dimension, as kernels::rms_norm (CPU): sum of squares in double,
// scale = 1/sqrtf(mean + eps) in float (IEEE sqrt and division: nvcc's defaults), then
// (x * scale) * w with explicit round-to-nearest multiplies so that no FMA contraction changes
// the bits relative to the CPU. One block per row.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// x and y may alias: every read of pass 1 completes before block_sum returns, and pass 2
// reads x[i] before writing y[i] in the same thread.
__global__ void __launch_bounds__(kThreads)
rms_norm_kernel(const float* x, int64_t ldx, const float* __restrict__ w, float* y, int64_t ldy, int64_t n,
                float eps, bool accumulate) {
    const int64_t r = blockIdx.x;
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const double v = xr[i];
        sum += v * v;
    }
    sum = detail::block_sum(sum);
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = hd::mul(hd::mul(xr[i], scale), w[i]);
        yr[i] = accumulate ? hd::add(yr[i], v) : v;
    }
}

}  // namespace

void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t n_rows, int64_t n,
              float eps, bool accumulate, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    const LaunchConfig& lc = detail::checked(row_launch("rms_norm", n_rows, kThreads));
    rms_norm_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(x, ldx, w, y, ldy, n, eps,
                                                                                        accumulate);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
