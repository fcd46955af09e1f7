// `pipelm bench --roofline`: the read bandwidth this machine gives the weights, measured as a
// STREAM-like sum over a buffer at least 4x the last-level cache (and >= 512 MiB), with 256-bit
// loads where the CPU has AVX2 (as the matmul kernels read), best of `passes` per thread count.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "launcher/bench.h"
#include "runtime/base/error.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::launcher::bench {

namespace {

uint64_t llc_bytes() {
    uint64_t best = 0;
    int best_level = 0;
    for (int i = 0; i < 16; ++i) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
        std::ifstream fl(dir + "level"), fs(dir + "size");
        int level = 0;
        std::string size;
        if (!(fl >> level) || !(fs >> size) || size.empty()) continue;
        uint64_t v = std::strtoull(size.c_str(), nullptr, 10);
        const char unit = size.back();
        if (unit == 'K') v <<= 10;
        else if (unit == 'M') v <<= 20;
        else if (unit == 'G') v <<= 30;
        if (level > best_level || (level == best_level && v > best)) best = v, best_level = level;
    }
    return best ? best : (32ull << 20);
}

// Sum of p[0..n): 256-bit loads when the CPU has AVX2 (as the matmul kernels use), else scalar.
#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, int64_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
    }
    alignas(32) uint64_t lane[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lane), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    uint64_t s = lane[0] + lane[1] + lane[2] + lane[3];
    for (; i < n; ++i) s += p[i];
    return s;
}
#endif
uint64_t sum_scalar(const uint64_t* p, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; ++i) s += p[i];
    return s;
}


}  // namespace

Bandwidth measure_bandwidth(const std::vector<int>& thread_counts, int passes) {
    Bandwidth bw;
    bw.llc = llc_bytes();
    bw.buffer_bytes = std::max<uint64_t>(4 * bw.llc, 512ull << 20);
    const int64_t n = static_cast<int64_t>(bw.buffer_bytes / 8);
    std::vector<uint64_t> buf(n);
#if defined(__x86_64__)
    const bool avx2 = __builtin_cpu_supports("avx2");
#endif
    for (int threads : thread_counts) {
        if (bw.gbs.count(threads)) continue;
        ThreadPool pool(threads);
        pool.parallel_for(n, [&](int64_t b, int64_t e, int) {  // first touch by the readers
            for (int64_t i = b; i < e; ++i) buf[i] = static_cast<uint64_t>(i);
        }, 512);
        std::vector<uint64_t> sums(threads * 8);
        double best = 1e30;
        for (int rep = 0; rep < passes; ++rep) {
            const auto t0 = Clock::now();
            pool.parallel_for(n, [&](int64_t b, int64_t e, int t) {
#if defined(__x86_64__)
                if (avx2) {
                    sums[t * 8] += sum_avx2(buf.data() + b, e - b);
                    return;
                }
#endif
                sums[t * 8] += sum_scalar(buf.data() + b, e - b);
            }, 512);
            best = std::min(best, since(t0));
        }
        uint64_t check = 0;
        for (uint64_t s : sums) check += s;
        const uint64_t expect = static_cast<uint64_t>(n) * static_cast<uint64_t>(n - 1) / 2 * passes;
        PIPELM_CHECK(check == expect, "roofline: read benchmark summed wrongly");
        bw.gbs[threads] = static_cast<double>(bw.buffer_bytes) / best / 1e9;
    }
    return bw;
}

}  // namespace pipelm::launcher::bench
