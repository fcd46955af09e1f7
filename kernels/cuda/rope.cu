// NORM (adjacent-pair) rotary embedding, as kernels::rope_norm: for each head and 2i < n_rot,
// (x0, x1) -> (x0 c - x1 s, x0 s + x1 c) (hd::rope_rotate: explicit _rn arithmetic, no FMA
// contraction, the same bits as the CPU) with the cos/sin of the token's position from the table
// built on the host by kernels::rope_table (double precision). One block per token.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/hd_math.h"
#include "kernels/cuda/ops_cuda.h"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
rope_norm_kernel(float* x, int64_t ld, int n_heads, int head_dim, int n_rot, const int32_t* __restrict__ pos,
                 const float* __restrict__ cos_sin) {
    const int64_t t = blockIdx.x;
    const float* cs = cos_sin + static_cast<int64_t>(pos[t]) * n_rot;
    const int half = n_rot / 2;
    for (int k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
        const int h = k / half, i = k % half;
        float* v = x + t * ld + static_cast<int64_t>(h) * head_dim + 2 * i;
        const float c = cs[2 * i], s = cs[2 * i + 1];
        hd::rope_rotate(v[0], v[1], c, s, &v[0], &v[1]);
    }
}

}  // namespace

void rope_norm(float* x, int64_t ld, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
               const float* cos_sin, cudaStream_t stream) {
    if (n_tokens <= 0 || n_heads <= 0 || n_rot < 2) return;
    PIPELM_CHECK(n_rot % 2 == 0 && n_rot <= head_dim, "rope: n_rot ", n_rot, " must be even and <= head_dim ", head_dim);
    const LaunchConfig& lc = detail::checked(row_launch("rope_norm", n_tokens, kThreads));
    rope_norm_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(x, ld, n_heads, head_dim,
                                                                                         n_rot, pos, cos_sin);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
