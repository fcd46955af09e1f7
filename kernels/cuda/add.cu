// Element-wise adds (residual, bias) and the NaN/Inf check run after every layer. Also the
// build/device compatibility check, which needs a kernel to look at.
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

#ifndef PIPELM_CUDA_ARCHS
#define PIPELM_CUDA_ARCHS "?"
#endif

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) add_kernel(float* x, const float* y, int64_t n) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        x[i] = hd::add(x[i], y[i]);
}

__global__ void __launch_bounds__(kThreads)
add_bias_kernel(float* x, int64_t ld, const float* __restrict__ bias, int64_t n) {
    float* xr = x + blockIdx.x * ld;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xr[i] = hd::add(xr[i], bias[i]);
}

__global__ void __launch_bounds__(kThreads) check_finite_kernel(const float* __restrict__ x, int64_t n, int* flag) {
    int bad = 0;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        bad |= !isfinite(x[i]);
    if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

}  // namespace

void check_device_supported() {
    int dev = 0;
    PIPELM_CUDA_CHECK(cudaGetDevice(&dev));
    cudaFuncAttributes attr{};
    const cudaError_t e = cudaFuncGetAttributes(&attr, add_kernel);
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();
    int major = 0, minor = 0;
    (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    (void)cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    (void)cudaGetLastError();
    PIPELM_THROW(ErrorCode::kCuda, "cuda:", dev, " (compute capability ", major, ".", minor,
                 ") cannot run this build's kernels (", cudaGetErrorString(e),
                 "): rebuild with -DCMAKE_CUDA_ARCHITECTURES=", major, minor, " (built for: ", PIPELM_CUDA_ARCHS, ")");
}

void add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    const LaunchConfig& lc = detail::checked(grid_stride_launch("add", n, kThreads));
    add_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(x, y, n);
    PIPELM_CUDA_CHECK_LAUNCH();
}

void add_bias_rows(float* x, int64_t ld, const float* bias, int64_t n_rows, int64_t n, cudaStream_t stream) {
    if (n_rows <= 0 || n <= 0) return;
    const LaunchConfig& lc = detail::checked(row_launch("add_bias_rows", n_rows, kThreads));
    add_bias_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(x, ld, bias, n);
    PIPELM_CUDA_CHECK_LAUNCH();
}

void check_finite(const float* x, int64_t n, int* flag, cudaStream_t stream) {
    if (n <= 0) return;
    const LaunchConfig& lc = detail::checked(grid_stride_launch("check_finite", n, kThreads, 1024));
    check_finite_kernel<<<detail::to_dim3(lc.grid), detail::to_dim3(lc.block), 0, stream>>>(x, n, flag);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
