// Helpers of the CUDA tests: skip without a device, host <-> device vectors, random data,
// error measures.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device_buffer.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::cudatest {

// True when a CUDA device can be used; otherwise *why says why not (for GTEST_SKIP).
inline bool cuda_device_present(std::string* why) {
    static int state = -1;  // -1 unknown, 0 absent, 1 present
    static std::string reason;
    if (state < 0) {
        int n = 0;
        const cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            reason = std::string("no CUDA device: cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + ": " +
                     cudaGetErrorString(e);
            state = 0;
        } else if (n == 0) {
            reason = "no CUDA device: cudaGetDeviceCount reports 0 devices";
            state = 0;
        } else {
            state = 1;
        }
    }
    if (why) *why = reason;
    return state == 1;
}

}  // namespace pipelm::cudatest

// First statement of every test that needs a GPU.
#define PIPELM_REQUIRE_CUDA()                                              \
    do {                                                                   \
        std::string pipelm_why_;                                           \
        if (!::pipelm::cudatest::cuda_device_present(&pipelm_why_)) GTEST_SKIP() << pipelm_why_; \
    } while (0)

namespace pipelm::cudatest {

namespace kc = pipelm::kernels::cuda;

// Fixture of the per-op tests: skips without a device, else device 0, the legacy default
// stream and a 2-thread pool for the CPU references.
class DeviceTest : public ::testing::Test {
protected:
    void SetUp() override {
        PIPELM_REQUIRE_CUDA();
        PIPELM_CUDA_CHECK(cudaSetDevice(0));
    }
    cudaStream_t stream = nullptr;  // the legacy default stream
    ThreadPool pool{2};
};

// A device copy of a host vector.
template <typename T>
kc::DeviceBuffer to_device(const std::vector<T>& v) {
    kc::DeviceBuffer b(std::max<size_t>(1, v.size() * sizeof(T)), "test data");
    if (!v.empty()) PIPELM_CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return b;
}

// n elements of type T from the device (after a device synchronization).
template <typename T>
std::vector<T> to_host(const kc::DeviceBuffer& b, size_t n) {
    PIPELM_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> v(n);
    if (n) PIPELM_CUDA_CHECK(cudaMemcpy(v.data(), b.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
}

// A device buffer of n floats filled with a NaN pattern (every element must be written).
inline kc::DeviceBuffer poisoned(size_t n) {
    kc::DeviceBuffer b(std::max<size_t>(1, n * sizeof(float)), "test output");
    PIPELM_CUDA_CHECK(cudaMemset(b.get(), 0xff, std::max<size_t>(1, n * sizeof(float))));  // 0xffffffff: NaN
    return b;
}

inline std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// max_i |a_i - b_i| / max_i |b_i| (NaN anywhere in a gives +inf).
inline double max_rel(const float* a, const float* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(a[i]) && std::isfinite(b[i])) return INFINITY;
        num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
        den = std::max(den, std::fabs(static_cast<double>(b[i])));
    }
    return den > 0 ? num / den : num;
}
inline double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    return max_rel(a.data(), b.data(), std::min(a.size(), b.size()));
}

// ||a_r - b_r|| / ||b_r|| for row r of [rows][n].
inline double row_rel_l2(const float* a, const float* b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; ++i) {
        const double e = static_cast<double>(a[i]) - b[i];
        d += e * e;
        s += static_cast<double>(b[i]) * b[i];
    }
    if (!std::isfinite(d)) return INFINITY;
    return s > 0 ? std::sqrt(d / s) : std::sqrt(d);
}

}  // namespace pipelm::cudatest
