#include "runtime/base/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <utility>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "runtime/base/error.h"

namespace pipelm {
namespace {

// A spin-wait step: the CPU's pause hint (no system call), else a yield.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#else
    std::this_thread::yield();
#endif
}

// Spin steps with pause (~30 ns each on the AMD EPYC VM: ~30 us in all) before a waiter falls
// back to yielding, then to sleeping: the regions of one decode step follow each other within
// microseconds, and a sched_yield costs more than that wait. Measured, 2 threads, empty
// regions: 2.1-2.7 us per region with yield-spinning only, 0.45 us with this.
constexpr int kPauseSpins = 1024;

// One step of an idle prefetch: 4 KiB (64 lines) into L2 (prefetcht1), then the caller checks for
// work again. Returns the bytes left.
constexpr size_t kPrefetchStep = 4096;
inline size_t prefetch_step(const char*& p, size_t n, std::atomic<uint64_t>& done) {
    const size_t step = n < kPrefetchStep ? n : kPrefetchStep;
    for (size_t o = 0; o < step; o += 64) __builtin_prefetch(p + o, 0, 2);
    p += step;
    done.store(done.load(std::memory_order_relaxed) + step, std::memory_order_relaxed);
    return n - step;
}

// First grain of share t of n_grains split over nt threads (the one split every caller uses).
inline int64_t share_grain(int64_t n_grains, int nt, int t) { return n_grains * t / nt; }

}  // namespace

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(std::max(1, n_threads)), cursors_(std::max(1, n_threads)), idle_(std::max(1, n_threads)) {
    try {
        workers_.reserve(n_threads_ - 1);
        for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
    } catch (const std::exception& e) {
        // The destructor does not run for a constructor that throws: stop and join the threads
        // started so far here, or the members would be destroyed under them (the condition
        // variable's destructor then waits for its sleepers forever).
        const int started = static_cast<int>(workers_.size()) + 1;
        stop_and_join();
        PIPELM_THROW(ErrorCode::kOutOfMemory, "cannot start compute thread ", started + 1, " of ", n_threads_, " (",
                     e.what(), "): lower --threads (this host has ", std::thread::hardware_concurrency(), " cores)");
    }
}

ThreadPool::~ThreadPool() { stop_and_join(); }

void ThreadPool::stop_and_join() noexcept {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
}

void ThreadPool::set_idle_prefetch(int t, const void* p, size_t n) {
    if (t < 0 || t >= n_threads_) return;
    idle_[t].p = static_cast<const char*>(p);
    idle_[t].n = p == nullptr ? 0 : n;
}

uint64_t ThreadPool::idle_prefetched(int t) const {
    return t < 0 || t >= n_threads_ ? 0 : idle_[t].done.load(std::memory_order_relaxed);
}

void ThreadPool::worker_loop(int index) {
    uint64_t seen = 0;
    const char* idle_p = nullptr;
    size_t idle_n = 0;
    for (;;) {
        // The idle prefetch first (until the next region starts), then spin a little (cheap
        // wake-up for back-to-back regions), then sleep.
        while (idle_n != 0 && generation_.load(std::memory_order_acquire) == seen)
            idle_n = prefetch_step(idle_p, idle_n, idle_[index].done);
        idle_n = 0;
        for (int i = 0; i < kPauseSpins && generation_.load(std::memory_order_acquire) == seen; ++i) cpu_relax();
        auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
        while (generation_.load(std::memory_order_acquire) == seen && !stop_.load()) {
            if (std::chrono::steady_clock::now() > spin_until) {
                std::unique_lock<std::mutex> lock(mu_);
                cv_.wait(lock, [&] { return generation_.load() != seen || stop_.load(); });
                break;
            }
            std::this_thread::yield();
        }
        if (stop_.load()) return;
        seen = generation_.load(std::memory_order_acquire);
        const std::function<void(int)>* job = job_;
        idle_p = idle_[index].p;
        idle_n = std::exchange(idle_[index].n, 0);
        try {
            (*job)(index);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mu_);
            if (!error_) error_ = std::current_exception();
        }
        pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
    if (n_threads_ == 1) {
        idle_[0].n = 0;
        fn(0);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        job_ = &fn;
        error_ = nullptr;
        pending_.store(n_threads_ - 1);
        generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    cv_.notify_all();
    const char* idle_p = idle_[0].p;
    size_t idle_n = std::exchange(idle_[0].n, 0);
    std::exception_ptr mine;
    try {
        fn(0);
    } catch (...) {
        mine = std::current_exception();
    }
    while (idle_n != 0 && pending_.load(std::memory_order_acquire) != 0)
        idle_n = prefetch_step(idle_p, idle_n, idle_[0].done);
    for (int i = 0; i < kPauseSpins && pending_.load(std::memory_order_acquire) != 0; ++i) cpu_relax();
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
    run_shares(n, fn, grain, false);
}

void ThreadPool::parallel_for_balanced(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                                       int64_t grain) {
    run_shares(n, fn, grain, true);
}

int64_t ThreadPool::share_begin(int64_t n, int64_t grain, int t) const {
    if (n <= 0) return 0;
    grain = std::max<int64_t>(1, grain);
    const int64_t n_grains = (n + grain - 1) / grain;
    const int nt = static_cast<int>(std::min<int64_t>(n_threads_, n_grains));
    if (t >= nt) return n;
    return std::min(n, share_grain(n_grains, nt, std::max(t, 0)) * grain);
}

void ThreadPool::run_shares(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain,
                            bool steal) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    const int64_t n_grains = (n + grain - 1) / grain;
    const int nt = static_cast<int>(std::min<int64_t>(n_threads_, n_grains));
    if (nt == 1) {
        fn(0, n, 0);
        return;
    }
    if (!steal) {  // one contiguous share per thread
        run_on_all([&](int t) {
            if (t >= nt) return;
            // share_begin's split, from the n_grains and nt computed above for every thread
            const int64_t b = share_grain(n_grains, nt, t) * grain;
            const int64_t e = std::min(n, share_grain(n_grains, nt, t + 1) * grain);
            if (b < e) fn(b, e, t);
        });
        return;
    }
    for (int t = 0; t < nt; ++t) cursors_[t].next.store(0, std::memory_order_relaxed);
    run_on_all([&](int t) {
        if (t >= nt) return;
        for (int k = 0; k < nt; ++k) {
            const int v = (t + k) % nt;  // own share first, then the others'
            const int64_t g0 = share_grain(n_grains, nt, v), g1 = share_grain(n_grains, nt, v + 1), G = g1 - g0;
            for (;;) {
                // Chunk c of a share of G grains: [G - (G >> c), G - (G >> (c + 1))), the last
                // one ending at G: halves, then quarters, ... down to one grain.
                const int64_t c = cursors_[v].next.fetch_add(1, std::memory_order_relaxed);
                if (c >= 63 || (c > 0 && (G >> (c - 1)) <= 1)) break;
                const int64_t b = G - (G >> c), e = (G >> (c + 1)) == 0 ? G : G - (G >> (c + 1));
                if (b >= e) break;
                fn((g0 + b) * grain, std::min(n, (g0 + e) * grain), t);
            }
        }
    });
}

}  // namespace pipelm
