// SwiGLU on the fused gate|up projection, as kernels::swiglu: out = g / (1 + exp(-g)) * u with
// gate g = gu[t][i] and up u = gu[t][n_ff + i], with the CPU's exp and operation order
// (hd::silu_mul): the same bits as the CPU.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/hd_math.h"
#include "kernels/cuda/ops_cuda.h"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
swiglu_kernel(const float* __restrict__ gu, float* __restrict__ out, int64_t n_tokens, int64_t n_ff) {
    const int64_t total = n_tokens * n_ff;
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t t = k / n_ff, i = k % n_ff;
        const float g = gu[t * 2 * n_ff + i];
        const float u = gu[t * 2 * n_ff + n_ff + i];
        out[k] = hd::silu_mul(g, u);
    }
}

}  // namespace

void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff, cudaStream_t stream) {
    if (n_tokens <= 0 || n_ff <= 0) return;
    const LaunchConfig& lc = detail::checked(grid_stride_launch("swiglu", n_tokens * n_ff, kThreads));
    swiglu_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(gu, out, n_tokens, n_ff);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
