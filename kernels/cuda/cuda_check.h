// Error checking for the CUDA runtime and cuBLAS: every failing call becomes a pipelm::Error
// that names the device, the call and the CUDA/cuBLAS error. Host-only header (no kernels).
//   PIPELM_CUDA_CHECK(expr)    cudaError_t   -> Error{kCuda} (kOutOfMemory for allocation failures)
//   PIPELM_CUBLAS_CHECK(expr)  cublasStatus_t -> Error{kCublas} (kOutOfMemory for CUBLAS_STATUS_ALLOC_FAILED)
//   PIPELM_CUDA_WARN(expr)     destructors and noexcept paths: logs, never throws
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "runtime/base/error.h"
#include "runtime/base/log.h"

namespace pipelm::kernels::cuda {

// "cuda:N" of the calling thread's current device ("cuda:?" when even that fails).
inline std::string current_device_name() {
    int d = -1;
    if (cudaGetDevice(&d) != cudaSuccess) {
        (void)cudaGetLastError();
        return "cuda:?";
    }
    return "cuda:" + std::to_string(d);
}

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* expr) {
    const ErrorCode code = e == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kCuda;
    PIPELM_THROW(code, current_device_name(), ": ", expr, " failed: ", cudaGetErrorName(e), ": ",
                 cudaGetErrorString(e));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t s, const char* expr) {
    const ErrorCode code = s == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kOutOfMemory : ErrorCode::kCublas;
    PIPELM_THROW(code, current_device_name(), ": ", expr, " failed: ", cublasGetStatusName(s), ": ",
                 cublasGetStatusString(s));
}

}  // namespace pipelm::kernels::cuda

#define PIPELM_CUDA_CHECK(expr)                                                        \
    do {                                                                               \
        const cudaError_t pipelm_e_ = (expr);                                          \
        if (pipelm_e_ != cudaSuccess) ::pipelm::kernels::cuda::throw_cuda_error(pipelm_e_, #expr); \
    } while (0)

#define PIPELM_CUBLAS_CHECK(expr)                                                      \
    do {                                                                               \
        const cublasStatus_t pipelm_s_ = (expr);                                       \
        if (pipelm_s_ != CUBLAS_STATUS_SUCCESS)                                        \
            ::pipelm::kernels::cuda::throw_cublas_error(pipelm_s_, #expr);             \
    } while (0)

#define PIPELM_CUDA_WARN(expr)                                                         \
    do {                                                                               \
        const cudaError_t pipelm_e_ = (expr);                                          \
        if (pipelm_e_ != cudaSuccess)                                                  \
            PIPELM_WARN(#expr, " failed: ", cudaGetErrorName(pipelm_e_), ": ",         \
                        cudaGetErrorString(pipelm_e_));                                \
    } while (0)

// After every kernel launch: launch-configuration errors (and earlier asynchronous faults).
#define PIPELM_CUDA_CHECK_LAUNCH() PIPELM_CUDA_CHECK(cudaGetLastError())
