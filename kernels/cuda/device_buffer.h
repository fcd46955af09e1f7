// RAII owners of CUDA resources: DeviceBuffer (cudaMalloc), PinnedBuffer (cudaMallocHost),
// CudaStream, CudaEvent, CublasHandle, and DeviceGuard (sets the current device for a scope).
// Move-only; destructors never throw (PIPELM_CUDA_WARN). Host-only header.
#pragma once
#include <cstddef>
#include <string>
#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace pipelm::kernels::cuda {

inline std::string mib(size_t bytes) {
    return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB";
}

// Device memory on the current device. An allocation failure throws Error{kOutOfMemory} naming
// the device, the bytes, what they were for, and the device's free/total memory.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(size_t bytes, const char* what) : bytes_(bytes) {
        if (bytes == 0) return;
        const cudaError_t e = cudaMalloc(&ptr_, bytes);
        if (e != cudaSuccess) {
            ptr_ = nullptr;
            (void)cudaGetLastError();  // allocation errors are not sticky; clear it
            if (e != cudaErrorMemoryAllocation) throw_cuda_error(e, "cudaMalloc");
            size_t free_b = 0, total_b = 0;
            (void)cudaMemGetInfo(&free_b, &total_b);
            (void)cudaGetLastError();
            PIPELM_THROW(ErrorCode::kOutOfMemory, current_device_name(), ": out of device memory allocating ",
                         mib(bytes), " (", bytes, " bytes) for ", what, " (", mib(free_b), " free of ",
                         mib(total_b), ")");
        }
    }
    ~DeviceBuffer() { reset(); }
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            ptr_ = std::exchange(o.ptr_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void reset() noexcept {
        if (ptr_) PIPELM_CUDA_WARN(cudaFree(ptr_));
        ptr_ = nullptr;
        bytes_ = 0;
    }
    void* get() const { return ptr_; }
    template <typename T>
    T* as() const { return static_cast<T*>(ptr_); }
    size_t bytes() const { return bytes_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// Page-locked host memory (staging for asynchronous copies).
class PinnedBuffer {
public:
    PinnedBuffer() = default;
    explicit PinnedBuffer(size_t bytes) : bytes_(bytes) {
        if (bytes) PIPELM_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
    }
    ~PinnedBuffer() { reset(); }
    PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            ptr_ = std::exchange(o.ptr_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;

    void reset() noexcept {
        if (ptr_) PIPELM_CUDA_WARN(cudaFreeHost(ptr_));
        ptr_ = nullptr;
        bytes_ = 0;
    }
    template <typename T>
    T* as() const { return static_cast<T*>(ptr_); }
    size_t bytes() const { return bytes_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

class CudaStream {
public:
    CudaStream() { PIPELM_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
    ~CudaStream() {
        if (s_) PIPELM_CUDA_WARN(cudaStreamDestroy(s_));
    }
    CudaStream(CudaStream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    CudaStream& operator=(CudaStream&&) = delete;
    CudaStream(const CudaStream&) = delete;
    CudaStream& operator=(const CudaStream&) = delete;
    cudaStream_t get() const { return s_; }
    void synchronize() const { PIPELM_CUDA_CHECK(cudaStreamSynchronize(s_)); }

private:
    cudaStream_t s_ = nullptr;
};

class CudaEvent {
public:
    explicit CudaEvent(bool timing = false) {
        PIPELM_CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
    }
    ~CudaEvent() {
        if (e_) PIPELM_CUDA_WARN(cudaEventDestroy(e_));
    }
    CudaEvent(CudaEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
    CudaEvent& operator=(CudaEvent&&) = delete;
    CudaEvent(const CudaEvent&) = delete;
    CudaEvent& operator=(const CudaEvent&) = delete;
    cudaEvent_t get() const { return e_; }
    void record(cudaStream_t s) { PIPELM_CUDA_CHECK(cudaEventRecord(e_, s)); }
    void synchronize() const { PIPELM_CUDA_CHECK(cudaEventSynchronize(e_)); }
    // Milliseconds from `start` to this event (both recorded with timing enabled).
    float elapsed_ms_since(const CudaEvent& start) const {
        float ms = 0;
        PIPELM_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
        return ms;
    }

private:
    cudaEvent_t e_ = nullptr;
};

// A cuBLAS handle bound to one stream, default math mode (no TF32: FP32 GEMMs stay FP32).
class CublasHandle {
public:
    explicit CublasHandle(cudaStream_t stream) {
        PIPELM_CUBLAS_CHECK(cublasCreate(&h_));
        PIPELM_CUBLAS_CHECK(cublasSetStream(h_, stream));
        PIPELM_CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH));
    }
    ~CublasHandle() {
        if (h_) {
            const cublasStatus_t s = cublasDestroy(h_);
            if (s != CUBLAS_STATUS_SUCCESS) PIPELM_WARN("cublasDestroy failed: ", cublasGetStatusString(s));
        }
    }
    CublasHandle(CublasHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    CublasHandle& operator=(CublasHandle&&) = delete;
    CublasHandle(const CublasHandle&) = delete;
    CublasHandle& operator=(const CublasHandle&) = delete;
    cublasHandle_t get() const { return h_; }

private:
    cublasHandle_t h_ = nullptr;
};

// Makes `device` current for the scope and restores the previous device afterwards
// (the current device is per host thread; stages of one process may sit on different GPUs).
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        PIPELM_CUDA_CHECK(cudaGetDevice(&prev_));
        if (prev_ != device) PIPELM_CUDA_CHECK(cudaSetDevice(device));
        set_ = device;
    }
    ~DeviceGuard() {
        if (prev_ >= 0 && prev_ != set_) PIPELM_CUDA_WARN(cudaSetDevice(prev_));
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int prev_ = -1;
    int set_ = -1;
};

}  // namespace pipelm::kernels::cuda
