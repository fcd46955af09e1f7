// Continuous batching over the pipeline. Requests join and leave between steps; each step fills
// ubatches (at most `ubatch` tokens each) with the next token of every running sequence that has
// one and chunks of prompts still to prefill, and keeps `max_in_flight` ubatches (default: one per
// stage) in the pipe so that every stage has work while the others compute.
//
// Threads: one driver thread calls step()/run() and is the only user of the Engine; any thread may
// submit(), read a Sequence and cancel() it. Results never depend on the batch a token lands in
// (the kernels compute each token's row alone, the sampler is per slot), so a greedy or seeded
// request gives the same tokens alone or next to others.
//
// A slot is free again at the first step after its sequence finishes, is cancelled, or its client
// goes away: ubatches of the old sequence still in the pipe run ahead of anything the slot's next
// sequence sends on the same links, and their outputs are dropped.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/pipeline/stage_runner.h"
#include "runtime/sampling/sampler.h"

namespace pipelm::pipeline {

enum class Finish {
    kNone,       // still running
    kStop,       // an end-of-generation token (not handed out), or the client's stop string
    kLength,     // max_tokens reached, or the end of the context
    kCancelled,  // cancel(), or the scheduler closed
    kError,      // the pipeline failed; SeqUpdate::error says why
};
const char* finish_name(Finish f);

struct GenRequest {
    std::vector<int32_t> prompt;  // 1 .. n_ctx - 1 tokens
    sampling::SamplerParams sampler;
    int max_tokens = 16;  // >= 1; also stops at the end of the context
    bool ignore_eos = false;
};

// What a client reads: the tokens sampled since its last read and, once, how it ended.
struct SeqUpdate {
    std::vector<int32_t> tokens;
    Finish finish = Finish::kNone;
    std::string error;
};

class Scheduler;

// A request's handle, shared by the scheduler and its client.
class Sequence {
public:
    uint64_t id() const { return id_; }
    int n_prompt() const { return static_cast<int>(req_.prompt.size()); }
    // Prompt tokens whose KV rows were already in the slot from an earlier request (not computed).
    int n_reused() const { return reused_.load(); }
    // Waits up to `timeout` for new tokens or the end; false when nothing new came.
    bool wait(SeqUpdate* out, std::chrono::milliseconds timeout);
    // The scheduler drops the sequence and frees its slot at its next step; it ends with `why`
    // (kStop when the client found its stop string). Only the first call counts.
    void cancel(Finish why = Finish::kCancelled) {
        int none = 0;
        cancel_.compare_exchange_strong(none, static_cast<int>(why));
    }
    bool cancelled() const { return cancel_.load() != 0; }

private:
    friend class Scheduler;
    enum class State { kWaiting, kPrefill, kAwaitFirst, kReady, kDecoding, kDone };
    Sequence(uint64_t id, GenRequest r) : id_(id), req_(std::move(r)) {}
    void deliver(int32_t token, Finish f, const std::string& error);

    const uint64_t id_;
    const GenRequest req_;
    std::atomic<int> cancel_{0};  // a Finish once cancel() was called
    std::atomic<int> reused_{0};
    // Client side, guarded by mu_.
    std::mutex mu_;
    std::condition_variable cv_;
    SeqUpdate pending_;
    bool ended_ = false;
    // Driver side only.
    State state_ = State::kWaiting;
    int slot_ = -1;
    int n_sent_ = 0;  // prompt tokens submitted (reused ones included)
    int n_past_ = 0;  // positions of the slot holding this sequence's tokens (submitted)
    int n_gen_ = 0;   // tokens sampled
    int32_t last_ = -1;
    std::chrono::steady_clock::time_point t_arrive_, t_last_;
};

// Prompt tokens a sequence start carries for the repetition penalty (its window looks back at most
// this far into the prompt).
constexpr int kMaxHistory = 4096;

struct SchedulerOptions {
    int n_slots = 1;        // the engine's sequence slots (--parallel)
    int ubatch = 64;        // token budget of one ubatch (--ubatch)
    int n_ctx = 0;          // positions per slot (--ctx)
    int max_queue = 64;     // requests waiting for a slot; submit() refuses more
    int max_in_flight = 0;  // ubatches in the pipe; 0 = one per stage
    bool reuse_prefix = true;    // start a prompt after the part its slot already holds
    std::vector<int32_t> eog;    // end-of-generation ids
};

// Cumulative histogram in Prometheus' layout: counts[i] = observations <= bounds[i]; the last
// count (+Inf) is every observation.
struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // bounds.size() + 1
    double sum = 0;
    uint64_t count = 0;
    explicit Histogram(std::vector<double> b = {});
    void add(double v);
};

struct SchedulerStats {
    uint64_t requests = 0;  // accepted by submit()
    uint64_t rejected = 0;  // queue full
    uint64_t finished_stop = 0, finished_length = 0, cancelled = 0, failed = 0;
    int waiting = 0, running = 0, free_slots = 0;
    uint64_t prompt_tokens = 0;         // prompt tokens computed
    uint64_t prompt_tokens_reused = 0;  // prompt tokens found in their slot
    uint64_t generated_tokens = 0;
    uint64_t ubatches = 0, ubatch_tokens = 0;
    uint64_t mixed_ubatches = 0;     // carrying decode tokens and prompt tokens together
    uint64_t waits = 0, full_waits = 0;  // results awaited, and of those with max_in_flight in the pipe
    uint64_t dropped_outputs = 0;    // outputs of sequences that had ended meanwhile
    Histogram ttft, itl, queue_time;  // seconds
    std::vector<double> stage_busy_s;
    double active_s = 0;  // wall time with at least one ubatch in the pipe
    int n_stages = 1, max_in_flight = 1;
    // Recoveries of the pipeline (TCP mode with --standby): count, seconds and tokens replayed.
    uint64_t recoveries = 0, recovery_tokens_replayed = 0;
    double recovery_s = 0;
};

class Scheduler {
public:
    Scheduler(Engine& engine, SchedulerOptions opt);

    // Any thread. nullptr when max_queue requests already wait (answer 429). Throws
    // Error{kInvalidArgument} for an empty prompt, one that leaves no room in the context, or
    // max_tokens < 1; Error{kCancelled} after close().
    std::shared_ptr<Sequence> submit(GenRequest r);

    // Driver thread. One step: frees the slots of ended or cancelled sequences, admits waiting
    // requests into free slots, submits ubatches until max_in_flight are in the pipe, then waits
    // for one result and hands out its tokens. With nothing to do it waits up to `idle` for a
    // request and returns false. On an engine error every sequence ends with kError and the error
    // is rethrown.
    bool step(std::chrono::milliseconds idle);
    // Driver thread: steps until stop() is true, then close()s and drains the pipe.
    void run(const std::function<bool()>& stop);
    // Any thread: refuse new requests; the driver ends every sequence (kCancelled) at its next step.
    void close();

    SchedulerStats stats() const;
    // Seconds a refused client should wait (Retry-After): about the time the queue ahead of it
    // takes to drain at the recent request rate; at least 1.
    int retry_after_s() const;
    const SchedulerOptions& options() const { return opt_; }

private:
    struct Row {  // an output row of a ubatch in flight
        std::shared_ptr<Sequence> seq;
    };
    void reap();
    void admit();
    bool submit_one();
    void take_result();
    // Gives clients the tokens take_result() held back. With stage 0 on its own thread, step()
    // calls it after submitting the next ubatches, so that stage 0 starts computing before the
    // woken client threads compete for the cores; otherwise take_result() calls it at once.
    void hand_out();
    void end(const std::shared_ptr<Sequence>& s, Finish f, const std::string& error = "");
    void fail_all(const std::string& why);
    int pick_slot(const std::vector<int32_t>& prompt, int* reuse) const;

    Engine& eng_;
    SchedulerOptions opt_;
    int target_ = 1;
    // Shared with submitters, guarded by mu_.
    mutable std::mutex mu_;
    std::condition_variable work_cv_;
    std::deque<std::shared_ptr<Sequence>> waiting_;
    bool closed_ = false;
    uint64_t next_id_ = 0;
    SchedulerStats st_;
    // Driver only.
    std::vector<std::shared_ptr<Sequence>> running_;  // admitted, not ended (any order)
    std::deque<std::shared_ptr<Sequence>> ready_;     // next token known, not yet submitted (FIFO)
    std::vector<int> free_;                           // free slots
    std::vector<std::vector<int32_t>> slot_tokens_;   // tokens whose KV rows each slot holds
    std::deque<std::vector<Row>> flights_;            // output rows of the ubatches in the pipe
    std::vector<std::pair<std::shared_ptr<Sequence>, int32_t>> to_hand_out_;  // see hand_out()
    std::chrono::steady_clock::time_point t_active_;
    std::deque<std::chrono::steady_clock::time_point> recent_ends_;  // guarded by mu_: retry_after_s
};

}  // namespace pipelm::pipeline
