// The work of pipeline stages: Tail (final norm, lm_head, sampling on the last stage),
// StageRunner (recv -> layers -> send loop of stages 1..S-1) and Engine (the coordinator, which
// is stage 0: it schedules ubatches, runs the embedding and its own layers, and gets sampled
// ids or logits back over the ring link).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/model/stage.h"
#include "runtime/pipeline/protocol.h"
#include "runtime/sampling/sampler.h"
#include "transport/link.h"

namespace pipelm::pipeline {

class Trace;

class Tail {
public:
    Tail(model::Stage& stage, int n_seq);
    void start_seq(const SeqStart& s);
    // start_seq(r.start), then `r.draws` samples' worth of the generator skipped (one uniform
    // draw per non-greedy sample, as Sampler::sample takes); at most `max_draws`.
    void resume_seq(const SeqResume& r, uint64_t max_draws);
    // Computes the outputs the header asks for from the ubatch's hidden states x.
    ResultHeader run(const UbatchHeader& h, const float* x, std::vector<float>* logits);

private:
    model::Stage& stage_;
    std::vector<sampling::Sampler> samplers_;
    std::vector<float> rows_;
};

struct RunnerOptions {
    std::string model_id;
    int n_stages = 1;
    int n_seq = 1;        // sequence slots (same --parallel on every rank)
    int n_ctx = 1 << 30;  // positions per slot, checked on every received ubatch (the stage checks too)
    std::chrono::milliseconds idle_timeout{std::chrono::seconds(1)};
    // Polled while idle: true stops the stage with Error{kCancelled} (links aborted).
    std::function<bool()> should_stop;
    // Called on the stage's thread when a ubatch arrives, before it is used (fault-injection tests).
    std::function<void()> on_ubatch;
};

// Stages 1..S-1. Returns on kShutdown; on any error aborts its links (so neighbours stop
// within seconds, with this stage's reason) and rethrows. Every received header is checked
// against this stage's slots, context and position in the pipeline before use (kProtocol).
class StageRunner {
public:
    StageRunner(model::Stage& stage, transport::StageLinks links, RunnerOptions opt);
    void run();

private:
    void loop();
    void handle_hello(const transport::Message& m);
    model::Stage& stage_;
    transport::StageLinks links_;
    RunnerOptions opt_;
    std::unique_ptr<Tail> tail_;
    std::vector<float> x_;
    std::vector<float> logits_;
};

// A pipeline re-formed after a stage was lost (TCP mode with --standby): the new links of stage 0
// and what changed, for the summary ("stage 2: 127.0.0.1:7002 -> 127.0.0.1:7004").
struct Relinked {
    transport::StageLinks links;
    std::string replaced;
    std::vector<LayerRange> plan;  // the new layer ranges when the stages changed (a lost stage
                                   // shared by the survivors), else empty; stage 0's never changes
};
// Given the error that broke the pipeline, re-forms it (every stage starts with an empty KV cache)
// or throws: the cause again when no stage is actually lost, Error{kPeerLost} naming the stage when
// no standby is left and the survivors cannot take it.
using Relink = std::function<Relinked(const Error& cause)>;

// One recovery, for the run's summary and /metrics.
struct Recovery {
    std::string replaced;    // which stage moved where
    std::string cause;       // the error that broke the pipeline
    double seconds = 0;      // from the failure to the pipeline carrying on
    int64_t tokens_replayed = 0;
};

struct EngineOptions {
    int n_stages = 1;
    int ubatch = 512;
    Wire wire = Wire::kF32;
    int n_seq = 1;
    std::string model_id;
    std::string model_name;
    std::vector<LayerRange> plan;
    std::chrono::milliseconds result_timeout{std::chrono::minutes(10)};
    Relink relink;        // unset: a lost stage ends the job (Error{kPeerLost})
    int max_recoveries = 16;
};

struct Result {
    ResultHeader header;
    std::vector<float> logits;  // [n_logit_rows][n_vocab]
};

struct PipelineStats {
    std::vector<double> busy_s;  // per stage, summed compute time (restarts when a recovery re-plans the stages)
    uint64_t ubatches = 0;
    uint64_t link_bytes = 0;
};

// Threads: one caller (the driver) uses the Engine. With 2+ stages, stage 0 runs on the Engine's
// own thread: submit() and start_seq() queue their work and return, and that thread embeds,
// computes stage 0's layers and sends, in call order, everything that goes down the pipeline (a
// sequence start never overtakes a ubatch queued before it). So the driver can hand out one
// group's tokens and admit requests while stage 0 computes the next group. An error of that
// thread surfaces at the driver's next submit(), start_seq() or next_result() (a lost stage there
// is recovered like one the driver saw); recovery, handshake and shutdown run on the driver while
// the thread is idle. With 1 stage everything runs inside submit().
class Engine {
public:
    Engine(model::Stage& stage0, transport::StageLinks links, EngineOptions opt);
    ~Engine();

    int n_stages() const { return opt_.n_stages; }
    int n_vocab() const { return stage_.config().n_vocab; }
    const EngineOptions& options() const { return opt_; }

    // Checks protocol version, model identity and layer ranges with every stage.
    void handshake();
    void start_seq(int slot, const sampling::SamplerParams& p, const std::vector<int32_t>& history);

    // Runs stage 0 on the tokens and passes the ubatch on (or finishes it locally with 1 stage).
    // Every submitted ubatch produces exactly one Result, in submission order. A result from the
    // last stage must match its ubatch field by field (id, slot of every output, sampled ids in
    // the vocabulary, logit rows and bytes, one busy time per stage), else Error{kProtocol}
    // naming the stage.
    uint64_t submit(const std::vector<int32_t>& tokens, const std::vector<int32_t>& seq,
                    const std::vector<int32_t>& pos, const std::vector<int32_t>& out_rows, bool sample,
                    bool want_logits);
    // True when submit() returns before stage 0 has computed the ubatch (stage 0's own thread).
    bool submits_async() const { return opt_.n_stages > 1; }
    Result next_result();
    int in_flight() const { return in_flight_; }

    // Prompt of one sequence in chunks of --ubatch that overlap across stages. Returns the
    // logits of every position ([n][n_vocab]) when all_logits, else of the last one only.
    std::vector<float> prefill_logits(int slot, const std::vector<int32_t>& tokens, int pos0, bool all_logits);
    // Prompt in chunks, then the sampled next token.
    int32_t prefill_sample(int slot, const std::vector<int32_t>& tokens, int pos0);
    // One decode step of one sequence: returns the sampled next token.
    int32_t decode_sample(int slot, int32_t token, int pos);

    void shutdown();
    const PipelineStats& stats() const { return stats_; }
    void reset_stats();
    uint64_t link_bytes() const;
    // Every recovery of this engine so far (not cleared by reset_stats).
    const std::vector<Recovery>& recoveries() const { return recoveries_; }
    // --trace: every result next_result returns is added to `t` (nullptr: none); not owned.
    void set_trace(Trace* t) { trace_ = t; }

private:
    // A ubatch in flight to the last stage: its inputs (to send it again after a recovery) and
    // what its result must match.
    struct Asked {
        uint64_t id = 0;
        std::vector<int32_t> tokens, seq, pos, out_rows;
        std::vector<int32_t> out_slots;  // slot of each output row
        bool sample = false;
        bool want_logits = false;
        bool replay = false;  // sent by a recovery: its tokens are already in history_
    };
    // What a re-formed pipeline needs of a sequence slot: its sampler and the tokens whose K/V the
    // stages hold, by position (-1: never written since the slot started).
    struct SlotLog {
        bool started = false;
        SeqStart start;
        std::vector<int32_t> sampled;  // every token the last stage sampled since start_seq
        std::vector<int32_t> tokens;   // token whose K/V the stages hold at each position (kept
                                       // across start_seq: a new sequence may reuse a prefix)
    };
    void check_result(const ResultHeader& r, size_t payload_bytes, const Asked& asked) const;
    UbatchHeader header_of(const Asked& a) const;  // unchecked (submit() checks a new ubatch's)
    void send_ubatch(const Asked& a);  // runs stage 0 on a's tokens and sends them on
    Result receive_result();           // the next result from the last stage, checked, logged
    void log_result(const Asked& a, const ResultHeader& r);
    // Re-forms the pipeline after `cause` (engine_recovery.cc): new links, handshake, every
    // sequence's sampler, a replay of every logged token, then the ubatches that were in flight.
    void recover(const Error& cause);
    int64_t replay_tokens();
    // Stage 0's thread. A job is a ubatch to compute and send, or a message to send.
    struct Job {
        bool is_ubatch = false;
        Asked ubatch;
        transport::Message msg;
    };
    void post(Job j);          // queues j (starts the thread on first use)
    void run_job(const Job& j);
    void worker_main();
    // Waits until the thread has nothing queued or running; then takes its error (null: none).
    std::exception_ptr quiesce();
    // Rethrows the thread's error (taken), if it has one.
    void rethrow_worker_error();
    // Waits until ubatch `id` has left stage 0 (sent down the pipeline) or the thread failed.
    void wait_sent(uint64_t id);
    // True when `e` is a lost stage that relink may replace.
    bool recoverable(const Error& e) const { return opt_.relink && e.code() == ErrorCode::kPeerLost; }
    // recover(cause) once stage 0's thread is idle (its own error, if any, is the same loss).
    void recover_idle(const Error& cause);
    void stop_worker();
    std::vector<SlotLog> slots_;
    std::vector<Recovery> recoveries_;

    model::Stage& stage_;
    transport::StageLinks links_;
    EngineOptions opt_;
    std::unique_ptr<Tail> tail_;  // with 1 stage
    std::deque<Result> local_;
    std::deque<Asked> asked_;  // ubatches sent down the pipeline, oldest first
    uint64_t next_id_ = 0;
    int in_flight_ = 0;
    bool shut_down_ = false;
    std::vector<float> x_;
    PipelineStats stats_;
    Trace* trace_ = nullptr;
    // Stage 0's thread (uses stage_, links_, opt_ and x_ while it runs a job; joined by ~Engine).
    std::thread worker_;
    std::mutex wmu_;
    std::condition_variable wcv_;    // a job queued, or stop
    std::condition_variable wdone_;  // the thread finished a job (or failed)
    std::deque<Job> jobs_;           // guarded by wmu_, as are the four below
    bool wbusy_ = false, wstop_ = false;
    uint64_t sent_upto_ = 0;         // every ubatch id below it has left stage 0
    std::exception_ptr werror_;      // the first error; the jobs queued after it are dropped
};

// One line per recovery: "recovery: stage 2: A -> B in 0.412 s, 57 tokens replayed (cause: ...)".
std::vector<std::string> recovery_lines(const std::vector<Recovery>& rs);

// Model identity for the handshake, 16 hex digits: XXH3-64 of the metadata (every key, type and
// value, each element of arrays included: one token of the vocabulary changes it), the tensor
// table (names, shapes, types, offsets) and the bytes of the small tensors (<= 64 KiB: norms and
// biases), not the large weights. An HF folder gets it from the GgufFile it is opened as.
std::string model_identity(const gguf::GgufFile& f);

}  // namespace pipelm::pipeline
