#include "runtime/pipeline/stage_runner.h"
#include "runtime/pipeline/trace.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include <xxhash.h>

#include "runtime/base/log.h"

namespace pipelm::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<uint8_t> floats_to_bytes(const std::vector<float>& v) {
    std::vector<uint8_t> b(v.size() * 4);
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
}

void check_ubatch(const UbatchHeader& h, int n_seq, int n_ctx) {
    if (h.seq.size() != h.pos.size() || h.seq.empty() || h.seq.size() > (1u << 20))
        PIPELM_THROW(ErrorCode::kProtocol, "ubatch ", h.id, ": ", h.seq.size(), " slots for ", h.pos.size(), " positions");
    if (h.out_rows.size() > h.seq.size() || h.sample > 1 || h.want_logits > 1 || h.wire > static_cast<uint8_t>(Wire::kBF16))
        PIPELM_THROW(ErrorCode::kProtocol, "ubatch ", h.id, ": malformed header (", h.out_rows.size(), " outputs of ",
                     h.seq.size(), " tokens, sample ", int(h.sample), ", logits ", int(h.want_logits), ", wire ",
                     int(h.wire), ")");
    for (size_t t = 0; t < h.seq.size(); ++t)
        if (h.seq[t] < 0 || h.seq[t] >= n_seq || h.pos[t] < 0 || h.pos[t] >= n_ctx)
            PIPELM_THROW(ErrorCode::kProtocol, "ubatch ", h.id, ": token ", t, " has slot ", h.seq[t], " / position ",
                         h.pos[t], " outside this stage's ", n_seq, " slots x ", n_ctx,
                         " context: start every rank with the same --ctx and --parallel");
    for (int32_t r : h.out_rows)
        if (r < 0 || r >= static_cast<int32_t>(h.seq.size()))
            PIPELM_THROW(ErrorCode::kProtocol, "ubatch ", h.id, ": output row ", r, " out of range");
}

}  // namespace

// ---- Tail -------------------------------------------------------------------------------

Tail::Tail(model::Stage& stage, int n_seq) : stage_(stage), samplers_(n_seq) {}

void Tail::start_seq(const SeqStart& s) {
    if (s.slot < 0 || s.slot >= static_cast<int>(samplers_.size()))
        PIPELM_THROW(ErrorCode::kProtocol, "sequence slot ", s.slot, " outside [0, ", samplers_.size(), ")");
    samplers_[s.slot] = sampling::Sampler(s.sampler);
    for (int32_t t : s.history) samplers_[s.slot].accept(t);
}

void Tail::resume_seq(const SeqResume& r, uint64_t max_draws) {
    if (r.draws > max_draws)
        PIPELM_THROW(ErrorCode::kProtocol, "sequence resume for slot ", r.start.slot, ": ", r.draws,
                     " samples drawn, more than the ", max_draws, " this stage's context allows");
    start_seq(r.start);
    // Sampler::sample draws one uniform per non-greedy call whatever the logits; a one-entry
    // vocabulary makes each call cheap. Greedy samplers draw nothing here either.
    const float one_logit = 0.f;
    for (uint64_t i = 0; i < r.draws; ++i) samplers_[r.start.slot].sample(&one_logit, 1);
}

ResultHeader Tail::run(const UbatchHeader& h, const float* x, std::vector<float>* logits) {
    ResultHeader r;
    r.id = h.id;
    const int64_t E = stage_.n_embd(), V = stage_.config().n_vocab;
    const int64_t n_out = static_cast<int64_t>(h.out_rows.size());
    if (n_out == 0) return r;
    rows_.resize(n_out * E);
    for (int64_t i = 0; i < n_out; ++i) std::memcpy(rows_.data() + i * E, x + h.out_rows[i] * E, E * sizeof(float));
    logits->resize(n_out * V);
    stage_.head(rows_.data(), n_out, logits->data());
    for (int64_t i = 0; i < n_out; ++i) {
        const int32_t slot = h.seq[h.out_rows[i]];
        r.seq.push_back(slot);
        if (h.sample) {
            const float* l = logits->data() + i * V;
            for (int64_t k = 0; k < V; ++k)
                if (!std::isfinite(l[k]))
                    PIPELM_THROW(ErrorCode::kNumerics, "stage ", stage_.spec().index,
                                 ": non-finite logits; the model's weights may be corrupt");
            const int32_t tok = samplers_[slot].sample(l, static_cast<int>(V));
            samplers_[slot].accept(tok);
            r.tokens.push_back(tok);
        }
    }
    r.n_logit_rows = h.want_logits ? static_cast<int32_t>(n_out) : 0;
    if (!h.want_logits) logits->clear();
    return r;
}

// ---- StageRunner ------------------------------------------------------------------------

StageRunner::StageRunner(model::Stage& stage, transport::StageLinks links, RunnerOptions opt)
    : stage_(stage), links_(std::move(links)), opt_(std::move(opt)) {
    if (stage_.spec().has_head) tail_ = std::make_unique<Tail>(stage_, opt_.n_seq);
}

void StageRunner::run() {
    try {
        loop();
    } catch (const std::exception& e) {
        const std::string reason = "stage " + std::to_string(stage_.spec().index) + " failed: " + e.what();
        for (auto* l : {&links_.prev, &links_.next, &links_.ring})
            if (*l) (*l)->abort(reason);
        throw;
    }
}

void StageRunner::handle_hello(const transport::Message& m) {
    const Hello h = decode<Hello>(m.control, "hello");
    const int s = stage_.spec().index;
    if (h.version != kProtocolVersion)
        PIPELM_THROW(ErrorCode::kProtocol, "protocol version mismatch: coordinator speaks ", h.version, ", stage ", s,
                     " speaks ", kProtocolVersion, ": run the same pipelm build on every host");
    if (h.model_id != opt_.model_id)
        PIPELM_THROW(ErrorCode::kProtocol, "model mismatch: coordinator has ", h.model_name, " (id ", h.model_id,
                     "), stage ", s, " has ", stage_.config().arch, " model with id ", opt_.model_id,
                     ": give every rank the same GGUF file");
    if (static_cast<int>(h.plan.size()) != opt_.n_stages || h.plan[s].first != stage_.spec().first_layer ||
        h.plan[s].last != stage_.spec().last_layer)
        PIPELM_THROW(ErrorCode::kProtocol, "layer range mismatch: coordinator assigns stage ", s, " layers [",
                     s < static_cast<int>(h.plan.size()) ? h.plan[s].first : -1, ", ",
                     s < static_cast<int>(h.plan.size()) ? h.plan[s].last : -1, ") of ", h.plan.size(),
                     " stages, this stage holds [", stage_.spec().first_layer, ", ", stage_.spec().last_layer, ") of ",
                     opt_.n_stages, ": pass the same --split on every rank");
    if (links_.next) {
        transport::Message fwd = m;
        links_.next->send(std::move(fwd));
    } else {
        HelloAck ack;
        ack.stage = s;
        links_.ring->send(make_message(kHelloAck, ack));
    }
}

void StageRunner::loop() {
    const int E = stage_.n_embd();
    for (;;) {
        transport::Message m;
        try {
            m = links_.prev->recv(opt_.idle_timeout);
        } catch (const Error& e) {
            if (e.code() != ErrorCode::kTimeout) throw;
            if (opt_.should_stop && opt_.should_stop())
                PIPELM_THROW(ErrorCode::kCancelled, "stage ", stage_.spec().index, " interrupted (Ctrl-C)");
            continue;
        }
        if (m.kind == transport::MsgKind::kShutdown) {
            if (links_.next) {
                links_.next->send(std::move(m));
                links_.next->flush();
            }
            if (links_.ring) links_.ring->flush();
            return;
        }
        // A signal to this process stops it at the next message even while the pipeline is
        // busy (the idle-timeout check above only runs when no message arrives for 1 s).
        if (opt_.should_stop && opt_.should_stop())
            PIPELM_THROW(ErrorCode::kCancelled, "stage ", stage_.spec().index, " interrupted (Ctrl-C)");
        switch (m.tag) {
            case kHello:
                handle_hello(m);
                break;
            case kSeqStart:
                if (tail_) tail_->start_seq(decode<SeqStart>(m.control, "sequence start"));
                if (links_.next) links_.next->send(std::move(m));
                break;
            case kSeqResume:
                // A sequence samples at most once per position it writes (x4 for benchmarks that
                // write positions again).
                if (tail_) tail_->resume_seq(decode<SeqResume>(m.control, "sequence resume"), uint64_t(opt_.n_ctx) * 4);
                if (links_.next) links_.next->send(std::move(m));
                break;
            case kUbatch: {
                if (opt_.on_ubatch) opt_.on_ubatch();
                UbatchHeader h = decode<UbatchHeader>(m.control, "ubatch");
                check_ubatch(h, opt_.n_seq, opt_.n_ctx);
                if (h.busy_s.size() != static_cast<size_t>(stage_.spec().index) || h.start_us.size() != h.busy_s.size())
                    PIPELM_THROW(ErrorCode::kProtocol, "ubatch ", h.id, " from ", links_.prev->peer_name(), " carries ",
                                 h.busy_s.size(), " stage times and ", h.start_us.size(), " start times, expected ",
                                 stage_.spec().index);
                const int64_t n = static_cast<int64_t>(h.seq.size());
                x_.resize(n * E);
                unpack_hidden(m.payload, x_.data(), n * E, static_cast<Wire>(h.wire));
                h.start_us.push_back(wall_us());  // before t0: see Engine::send_ubatch
                const auto t0 = Clock::now();
                model::Batch b{n, h.pos.data(), h.seq.data()};
                stage_.forward(x_.data(), b);
                if (tail_) {
                    ResultHeader r = tail_->run(h, x_.data(), &logits_);
                    h.busy_s.push_back(seconds_since(t0));
                    r.busy_s = h.busy_s;
                    r.start_us = h.start_us;
                    links_.ring->send(make_message(kResult, r, floats_to_bytes(logits_)));
                } else {
                    h.busy_s.push_back(seconds_since(t0));
                    const Wire w = static_cast<Wire>(h.wire);
                    links_.next->send(make_message(kUbatch, h, pack_hidden(x_.data(), n * E, w)));
                }
                break;
            }
            default:
                PIPELM_THROW(ErrorCode::kProtocol, "stage ", stage_.spec().index, ": unexpected message tag ", m.tag,
                             " from ", links_.prev->peer_name());
        }
    }
}

// ---- Engine -----------------------------------------------------------------------------

Engine::Engine(model::Stage& stage0, transport::StageLinks links, EngineOptions opt)
    : stage_(stage0), links_(std::move(links)), opt_(std::move(opt)) {
    PIPELM_CHECK(opt_.ubatch > 0, "--ubatch must be positive");
    if (opt_.n_stages == 1) tail_ = std::make_unique<Tail>(stage_, opt_.n_seq);
    else slots_.resize(opt_.n_seq);
    stats_.busy_s.assign(opt_.n_stages, 0.0);
}

Engine::~Engine() {
    try {
        shutdown();
    } catch (...) {
    }
    stop_worker();
}

// ---- Stage 0's thread ---------------------------------------------------------------------

void Engine::post(Job j) {
    PIPELM_CHECK(submits_async(), "post: a 1-stage engine computes in submit()");
    {
        std::lock_guard<std::mutex> lock(wmu_);
        if (!worker_.joinable()) worker_ = std::thread([this] { worker_main(); });
        jobs_.push_back(std::move(j));
    }
    wcv_.notify_one();
}

void Engine::run_job(const Job& j) {
    if (j.is_ubatch) {
        send_ubatch(j.ubatch);
    } else {
        transport::Message m = j.msg;
        links_.next->send(std::move(m));
    }
}

void Engine::worker_main() {
    std::unique_lock<std::mutex> lock(wmu_);
    for (;;) {
        wcv_.wait(lock, [this] { return wstop_ || !jobs_.empty(); });
        if (wstop_) return;
        Job j = std::move(jobs_.front());
        jobs_.pop_front();
        wbusy_ = true;
        lock.unlock();
        std::exception_ptr err;
        try {
            run_job(j);
        } catch (...) {
            err = std::current_exception();
        }
        lock.lock();
        wbusy_ = false;
        if (err) {
            if (!werror_) werror_ = err;
            jobs_.clear();  // the driver recovers (everything in flight is sent again) or fails
        } else if (j.is_ubatch) {
            sent_upto_ = std::max(sent_upto_, j.ubatch.id + 1);
        }
        wdone_.notify_all();
    }
}

std::exception_ptr Engine::quiesce() {
    std::unique_lock<std::mutex> lock(wmu_);
    wdone_.wait(lock, [this] { return jobs_.empty() && !wbusy_; });
    return std::exchange(werror_, nullptr);
}

void Engine::rethrow_worker_error() {
    std::exception_ptr err;
    {
        std::lock_guard<std::mutex> lock(wmu_);
        err = std::exchange(werror_, nullptr);
    }
    if (err) std::rethrow_exception(err);
}

void Engine::wait_sent(uint64_t id) {
    std::unique_lock<std::mutex> lock(wmu_);
    wdone_.wait(lock, [&] { return sent_upto_ > id || werror_ || (jobs_.empty() && !wbusy_); });
}

void Engine::recover_idle(const Error& cause) {
    (void)quiesce();  // the thread's own error, if any, is the same loss
    recover(cause);
}

void Engine::stop_worker() {
    {
        std::lock_guard<std::mutex> lock(wmu_);
        wstop_ = true;
    }
    wcv_.notify_all();
    if (worker_.joinable()) worker_.join();
}

void Engine::handshake() {
    if (opt_.n_stages == 1) return;
    Hello h;
    h.model_id = opt_.model_id;
    h.model_name = opt_.model_name;
    h.plan = opt_.plan;
    links_.next->send(make_message(kHello, h));
    transport::Message m = links_.ring->recv(opt_.result_timeout);
    if (m.kind != transport::MsgKind::kData || m.tag != kHelloAck)
        PIPELM_THROW(ErrorCode::kProtocol, "expected the handshake reply from the last stage (",
                     links_.ring->peer_name(), "), got tag ", m.tag);
    const HelloAck ack = decode<HelloAck>(m.control, "handshake reply");
    if (ack.stage != opt_.n_stages - 1 || !m.payload.empty())
        PIPELM_THROW(ErrorCode::kProtocol, "the handshake reply from ", links_.ring->peer_name(), " is from stage ",
                     ack.stage, " with ", m.payload.size(), " payload bytes, expected stage ", opt_.n_stages - 1,
                     " and none");
}

void Engine::start_seq(int slot, const sampling::SamplerParams& p, const std::vector<int32_t>& history) {
    SeqStart s;
    s.slot = slot;
    s.sampler = p;
    s.history = history;
    if (tail_) {
        tail_->start_seq(s);
        return;
    }
    PIPELM_CHECK(slot >= 0 && slot < opt_.n_seq, "start_seq: slot ", slot, " outside [0, ", opt_.n_seq, ")");
    // The slot's token log stays: a sequence may keep a prefix of the last one's KV rows (serve's
    // prompt reuse), and its first ubatch truncates the log where it starts writing.
    SlotLog& log = slots_[slot];
    log.started = true;
    log.start = s;
    log.sampled.clear();
    try {
        rethrow_worker_error();
        post(Job{false, {}, make_message(kSeqStart, s)});
    } catch (const Error& e) {
        if (!recoverable(e)) throw;
        recover_idle(e);  // sends every started slot's sampler again, this one included
    }
}

uint64_t Engine::submit(const std::vector<int32_t>& tokens, const std::vector<int32_t>& seq,
                        const std::vector<int32_t>& pos, const std::vector<int32_t>& out_rows, bool sample,
                        bool want_logits) {
    PIPELM_CHECK(tokens.size() == seq.size() && tokens.size() == pos.size() && !tokens.empty(),
                 "submit: tokens, slots and positions differ in length");
    Asked a;
    a.id = next_id_++;
    a.tokens = tokens;
    a.seq = seq;
    a.pos = pos;
    a.out_rows = out_rows;
    a.sample = sample;
    a.want_logits = want_logits && !out_rows.empty();
    // A bad ubatch fails here, on the caller's thread. With 2+ stages send_ubatch builds the same
    // header again from `a` on stage 0's thread (a few small vectors; not checked twice).
    const UbatchHeader h = header_of(a);
    check_ubatch(h, opt_.n_seq, 1 << 30);
    if (tail_) {
        const int64_t n = static_cast<int64_t>(tokens.size());
        x_.resize(n * stage_.n_embd());
        const int64_t start = wall_us();  // before t0: see send_ubatch
        const auto t0 = Clock::now();
        stage_.embed(tokens.data(), n, x_.data());
        model::Batch b{n, h.pos.data(), h.seq.data()};
        stage_.forward(x_.data(), b);
        Result r;
        r.header = tail_->run(h, x_.data(), &r.logits);
        r.header.busy_s = {seconds_since(t0)};
        r.header.start_us = {start};
        local_.push_back(std::move(r));
        ++in_flight_;
        return a.id;
    }
    for (int32_t row : out_rows)
        if (row >= 0 && row < static_cast<int32_t>(seq.size())) a.out_slots.push_back(seq[row]);
    asked_.push_back(std::move(a));
    ++in_flight_;
    try {
        rethrow_worker_error();
        post(Job{true, asked_.back(), {}});
    } catch (const Error& e) {
        if (!recoverable(e)) {
            asked_.pop_back();
            --in_flight_;
            throw;
        }
        recover_idle(e);  // sends every ubatch in flight again, this one included
    }
    return asked_.back().id;
}

UbatchHeader Engine::header_of(const Asked& a) const {
    UbatchHeader h;
    h.id = a.id;
    h.seq = a.seq;
    h.pos = a.pos;
    h.out_rows = a.out_rows;
    h.sample = a.sample;
    h.want_logits = a.want_logits;
    h.wire = static_cast<uint8_t>(opt_.wire);
    return h;
}

// Stage 0's thread, or the driver while that thread is idle (recovery).
void Engine::send_ubatch(const Asked& a) {
    const int64_t n = static_cast<int64_t>(a.tokens.size()), E = stage_.n_embd();
    UbatchHeader h = header_of(a);
    x_.resize(n * E);
    // The trace draws [start, start + busy]: with the wall clock read first, a preemption
    // between the two reads shortens the span instead of pushing its end past the real one
    // (where the next ubatch's span would begin).
    h.start_us.push_back(wall_us());
    const auto t0 = Clock::now();
    stage_.embed(a.tokens.data(), n, x_.data());
    model::Batch b{n, h.pos.data(), h.seq.data()};
    stage_.forward(x_.data(), b);
    h.busy_s.push_back(seconds_since(t0));
    links_.next->send(make_message(kUbatch, h, pack_hidden(x_.data(), n * E, opt_.wire)));
}

void Engine::check_result(const ResultHeader& r, size_t payload_bytes, const Asked& asked) const {
    const int64_t V = n_vocab();
    const size_t n_out = asked.out_slots.size();
    auto bad = [&](const auto&... why) {
        PIPELM_THROW(ErrorCode::kProtocol, "result from ", links_.ring->peer_name(), " for ubatch ", asked.id, ": ",
                     why..., " (is the last stage the same pipelm build?)");
    };
    if (r.id != asked.id) bad("it carries ubatch id ", r.id);
    if (r.seq.size() != n_out) bad(r.seq.size(), " output slots, ", n_out, " outputs were asked for");
    for (size_t i = 0; i < n_out; ++i)
        if (r.seq[i] != asked.out_slots[i]) bad("output ", i, " is for slot ", r.seq[i], ", it was asked for slot ",
                                                asked.out_slots[i]);
    const size_t n_tokens = asked.sample ? n_out : 0;
    if (r.tokens.size() != n_tokens) bad(r.tokens.size(), " sampled ids, expected ", n_tokens);
    for (int32_t t : r.tokens)
        if (t < 0 || t >= V) bad("sampled id ", t, " is outside the vocabulary [0, ", V, ")");
    const int64_t rows = asked.want_logits ? static_cast<int64_t>(n_out) : 0;
    if (r.n_logit_rows != rows) bad(r.n_logit_rows, " logit rows, ", rows, " were asked for");
    if (payload_bytes != static_cast<size_t>(rows * V) * sizeof(float))
        bad(payload_bytes, " bytes of logits, expected ", rows, " x ", V, " floats");
    if (r.busy_s.size() != static_cast<size_t>(opt_.n_stages)) bad(r.busy_s.size(), " stage times for ", opt_.n_stages, " stages");
    for (double b : r.busy_s)
        if (!std::isfinite(b) || b < 0) bad("stage time ", b);
    // Start times only feed --trace: none (a peer that does not record them) or one per stage.
    if (!r.start_us.empty() && r.start_us.size() != r.busy_s.size())
        bad(r.start_us.size(), " start times for ", opt_.n_stages, " stages");
}

Result Engine::next_result() {
    PIPELM_CHECK(in_flight_ > 0, "next_result: nothing in flight");
    Result r;
    if (tail_) {
        r = std::move(local_.front());
        local_.pop_front();
    } else {
        for (;;) {
            try {
                // A ubatch that never left stage 0 has no result to wait for: the thread's error
                // comes first. Once it is sent, the result comes or the ring link says why not.
                if (!asked_.empty()) wait_sent(asked_.front().id);  // (2+ stages: stage 0 has a thread)
                rethrow_worker_error();
                r = receive_result();
                break;
            } catch (const Error& e) {
                if (!recoverable(e)) throw;
                recover_idle(e);  // then wait for the same ubatch's result from the re-formed pipeline
            }
        }
    }
    --in_flight_;
    ++stats_.ubatches;
    if (trace_) trace_->add(r.header, wall_us());
    for (size_t s = 0; s < r.header.busy_s.size() && s < stats_.busy_s.size(); ++s) stats_.busy_s[s] += r.header.busy_s[s];
    return r;
}

std::vector<float> Engine::prefill_logits(int slot, const std::vector<int32_t>& tokens, int pos0, bool all_logits) {
    const int64_t n = static_cast<int64_t>(tokens.size()), V = n_vocab();
    PIPELM_CHECK(n > 0, "empty prompt");
    std::vector<float> out(all_logits ? n * V : V);
    int64_t done_rows = 0;
    auto take = [&](Result r) {
        if (r.header.n_logit_rows == 0) return;
        // next_result checked the rows against what each ubatch asked for; this only guards `out`.
        const int64_t rows = r.header.n_logit_rows;
        if (static_cast<int64_t>(r.logits.size()) != rows * V || (all_logits && done_rows + rows > n))
            PIPELM_THROW(ErrorCode::kInternal, "prefill: ", rows, " logit rows do not fit the ", n, " asked for");
        if (all_logits) {
            std::memcpy(out.data() + done_rows * V, r.logits.data(), r.logits.size() * 4);
            done_rows += r.header.n_logit_rows;
        } else {
            std::memcpy(out.data(), r.logits.data() + (r.header.n_logit_rows - 1) * V, V * 4);
        }
    };
    for (int64_t c0 = 0; c0 < n; c0 += opt_.ubatch) {
        const int64_t c1 = std::min<int64_t>(n, c0 + opt_.ubatch);
        std::vector<int32_t> tok(tokens.begin() + c0, tokens.begin() + c1), seq(c1 - c0, slot), pos(c1 - c0), rows;
        for (int64_t t = c0; t < c1; ++t) {
            pos[t - c0] = pos0 + static_cast<int32_t>(t);
            if (all_logits || t == n - 1) rows.push_back(static_cast<int32_t>(t - c0));
        }
        submit(tok, seq, pos, rows, false, !rows.empty());
        // Keep at most S ubatches in flight: enough to fill the pipe, bounded memory.
        while (in_flight_ > opt_.n_stages) take(next_result());
    }
    while (in_flight_ > 0) take(next_result());
    return out;
}

int32_t Engine::prefill_sample(int slot, const std::vector<int32_t>& tokens, int pos0) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    PIPELM_CHECK(n > 0, "empty prompt");
    int32_t tok = -1;
    for (int64_t c0 = 0; c0 < n; c0 += opt_.ubatch) {
        const int64_t c1 = std::min<int64_t>(n, c0 + opt_.ubatch);
        std::vector<int32_t> t(tokens.begin() + c0, tokens.begin() + c1), seq(c1 - c0, slot), pos(c1 - c0), rows;
        for (int64_t i = c0; i < c1; ++i) pos[i - c0] = pos0 + static_cast<int32_t>(i);
        const bool last = c1 == n;
        if (last) rows.push_back(static_cast<int32_t>(c1 - c0 - 1));
        submit(t, seq, pos, rows, last, false);
        while (in_flight_ > opt_.n_stages) next_result();
    }
    while (in_flight_ > 0) {
        Result r = next_result();
        if (!r.header.tokens.empty()) tok = r.header.tokens.back();
    }
    return tok;
}

int32_t Engine::decode_sample(int slot, int32_t token, int pos) {
    submit({token}, {slot}, {pos}, {0}, true, false);
    Result r = next_result();
    PIPELM_CHECK(r.header.tokens.size() == 1, "decode: the last stage returned no token");
    return r.header.tokens[0];
}

void Engine::shutdown() {
    if (shut_down_) return;
    shut_down_ = true;
    if (opt_.n_stages == 1 || !links_.next) return;
    (void)quiesce();  // what stage 0 queued goes first; an error of its thread ends nothing more here
    transport::Message m;
    m.kind = transport::MsgKind::kShutdown;
    links_.next->send(std::move(m));
    links_.next->flush();
}

void Engine::reset_stats() {
    stats_ = PipelineStats{};
    stats_.busy_s.assign(opt_.n_stages, 0.0);
}

uint64_t Engine::link_bytes() const {
    uint64_t b = 0;
    if (links_.next) b += links_.next->bytes_sent();
    if (links_.ring) b += links_.ring->bytes_received();
    return b;
}

namespace {

// XXH3-64 over the values fed in; every variable-length item is preceded by its length, so no
// two different sequences of items feed the same bytes.
class IdentityHash {
public:
    IdentityHash() : st_(XXH3_createState(), &XXH3_freeState) {
        if (!st_ || XXH3_64bits_reset(st_.get()) != XXH_OK) PIPELM_THROW(ErrorCode::kInternal, "XXH3_createState failed");
    }
    void bytes(const void* p, size_t n) {
        if (n > 0) XXH3_64bits_update(st_.get(), p, n);
    }
    void u64(uint64_t v) { bytes(&v, sizeof v); }
    void str(const std::string& s) {
        u64(s.size());
        bytes(s.data(), s.size());
    }
    // The type and the value; an array's element type, count and every element (the whole
    // vocabulary and merges of a tokenizer, each nested array).
    void value(const gguf::Value& v) {
        u64(static_cast<uint64_t>(v.type));
        switch (v.type) {
            case gguf::ValueType::kString: str(v.s); break;
            case gguf::ValueType::kF32:
            case gguf::ValueType::kF64: bytes(&v.f, sizeof v.f); break;
            case gguf::ValueType::kI8:
            case gguf::ValueType::kI16:
            case gguf::ValueType::kI32:
            case gguf::ValueType::kI64: u64(static_cast<uint64_t>(v.i)); break;
            case gguf::ValueType::kArray:
                u64(static_cast<uint64_t>(v.elem_type));
                u64(v.size());
                u64(v.raw.size());
                bytes(v.raw.data(), v.raw.size());
                for (const auto& s : v.strs) str(s);
                for (const auto& e : v.nested) value(e);
                break;
            default: u64(v.u); break;  // unsigned integers and bool
        }
    }
    std::string hex() const {
        char buf[17];
        std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(XXH3_64bits_digest(st_.get())));
        return buf;
    }

private:
    std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> st_;
};

}  // namespace

std::string model_identity(const gguf::GgufFile& f) {
    IdentityHash h;
    h.u64(f.metadata().size());
    for (const auto& kv : f.metadata()) {
        h.str(kv.first);
        h.value(kv.second);
    }
    h.u64(f.tensors().size());
    for (const auto& t : f.tensors()) {
        h.str(t.name);
        h.u64(t.ne.size());
        h.bytes(t.ne.data(), t.ne.size() * sizeof(int64_t));
        h.u64(static_cast<uint64_t>(t.type));
        h.u64(t.offset);
        // The small tensors too (norm weights and biases, at most 64 KiB each): two files with the
        // same header but other weights differ there (any fine-tune changes its norms), and a
        // stage does not page in other stages' large matrices to compute the identity.
        const bool small = t.data && t.bytes > 0 && t.bytes <= (64u << 10);
        h.u64(small ? t.bytes : 0);
        if (small) h.bytes(t.data, t.bytes);
    }
    return h.hex();
}

}  // namespace pipelm::pipeline
