// Fixed-size thread pool with static partitioning: parallel_for(n, fn) splits [0, n) into
// one contiguous chunk per thread. The caller thread takes chunk 0. Workers spin briefly
// before sleeping, since a transformer layer issues many short parallel regions.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pipelm {

class ThreadPool {
public:
    // Starts n_threads - 1 workers. If the system refuses a thread, the ones started are
    // stopped and joined and Error{kOutOfMemory} names the thread count.
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    // fn(begin, end, thread_index) for each non-empty chunk of [0, n). Chunks are aligned to
    // `grain` elements (except the end). Rethrows the first exception from any chunk.
    void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1);

    // Like parallel_for, but each thread's contiguous share is cut into chunks of decreasing
    // size (a half, a quarter, ... down to one grain) that the owner takes front to back; a
    // thread that finishes its own share takes the remaining chunks of the others. The static
    // shares keep each thread's memory streams sequential and long; the stealing absorbs a thread
    // that runs slower than its peers (a busy core, an uneven memory path), and the small last
    // chunks keep the others' wait at the end of the region short. fn may run several times per
    // thread; every index of [0, n) is covered exactly once.
    void parallel_for_balanced(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1);
    // Where thread t's contiguous share of [0, n) begins when either parallel_for splits it in
    // grains of `grain` on this pool (n when t has no share; share t ends where t + 1's begins).
    int64_t share_begin(int64_t n, int64_t grain, int t) const;

    // fn(thread_index) on every thread.
    void run_on_all(const std::function<void(int)>& fn);

    // Idle prefetch: bytes [p, p + n) for thread t to read into its L2 cache while it would
    // otherwise spin, i.e. once its part of the next region is done: thread 0 while it waits for
    // the others at that region's end, a worker from then until the region after it starts
    // (while the caller runs serial work between regions, the memory bus would idle). Taken up by
    // the next region only (set it before starting that region, from the calling thread); 4 KiB
    // per step with the wait checked between steps, so a region is delayed by one step at most. A
    // hint: prefetches never fault and change no result. Decode streams each weight matrix once
    // per token; reading the start of the next one during these gaps hides part of its stream.
    void set_idle_prefetch(int t, const void* p, size_t n);
    // Bytes thread t has prefetched so far under set_idle_prefetch (tests, profiling).
    uint64_t idle_prefetched(int t) const;

private:
    void worker_loop(int index);
    void stop_and_join() noexcept;
    // Both parallel_for flavours: static shares, with stealing when `steal`.
    void run_shares(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain, bool steal);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<bool> stop_{false};
    const std::function<void(int)>* job_ = nullptr;
    std::exception_ptr error_;
    std::mutex error_mu_;
    struct alignas(64) ChunkCursor {
        std::atomic<int64_t> next{0};
    };
    std::vector<ChunkCursor> cursors_;  // parallel_for_balanced: next chunk of each thread's share
    struct alignas(64) IdleRange {
        const char* p = nullptr;
        size_t n = 0;
        std::atomic<uint64_t> done{0};  // bytes prefetched, written by its thread only
    };
    // set_idle_prefetch: written by the caller before a region starts; each thread copies (and
    // clears) its own entry when it takes up that region, so the caller never writes one a thread
    // is still reading.
    std::vector<IdleRange> idle_;
};

}  // namespace pipelm
