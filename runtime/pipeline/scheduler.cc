#include "runtime/pipeline/scheduler.h"

#include <algorithm>
#include <cmath>

#include "runtime/base/error.h"
#include "runtime/base/log.h"

namespace pipelm::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Seconds; TTFT and inter-token latency span milliseconds (demo model) to a minute (a long
// prompt queued behind others on a large model).
const std::vector<double> kLatencyBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

}  // namespace

const char* finish_name(Finish f) {
    switch (f) {
        case Finish::kNone: return "none";
        case Finish::kStop: return "stop";
        case Finish::kLength: return "length";
        case Finish::kCancelled: return "cancelled";
        case Finish::kError: return "error";
    }
    return "?";
}

Histogram::Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}

void Histogram::add(double v) {
    for (size_t i = 0; i < bounds.size(); ++i)
        if (v <= bounds[i]) ++counts[i];
    ++counts.back();
    sum += v;
    ++count;
}

// ---- Sequence -------------------------------------------------------------------------------

bool Sequence::wait(SeqUpdate* out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    auto has_news = [this] { return !pending_.tokens.empty() || (pending_.finish != Finish::kNone && !ended_); };
    cv_.wait_for(lock, timeout, has_news);
    if (!has_news()) return false;
    out->tokens = std::move(pending_.tokens);
    pending_.tokens.clear();
    out->finish = pending_.finish;
    out->error = pending_.error;
    if (out->finish != Finish::kNone) ended_ = true;
    return true;
}

void Sequence::deliver(int32_t token, Finish f, const std::string& error) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (token >= 0) pending_.tokens.push_back(token);
        if (f != Finish::kNone && pending_.finish == Finish::kNone) {
            pending_.finish = f;
            pending_.error = error;
        }
    }
    cv_.notify_all();
}

// ---- Scheduler ------------------------------------------------------------------------------

Scheduler::Scheduler(Engine& engine, SchedulerOptions opt) : eng_(engine), opt_(std::move(opt)) {
    PIPELM_CHECK(opt_.n_slots >= 1 && opt_.n_slots <= eng_.options().n_seq, "scheduler: ", opt_.n_slots,
                 " slots, the engine has ", eng_.options().n_seq);
    PIPELM_CHECK(opt_.ubatch >= 1 && opt_.n_ctx >= 2 && opt_.max_queue >= 0 && opt_.max_in_flight >= 0,
                 "scheduler: bad options (ubatch ", opt_.ubatch, ", ctx ", opt_.n_ctx, ", queue ", opt_.max_queue, ")");
    target_ = opt_.max_in_flight > 0 ? opt_.max_in_flight : eng_.n_stages();
    for (int s = 0; s < opt_.n_slots; ++s) free_.push_back(s);
    slot_tokens_.resize(opt_.n_slots);
    st_.ttft = Histogram(kLatencyBounds);
    st_.itl = Histogram(kLatencyBounds);
    st_.queue_time = Histogram(kLatencyBounds);
    st_.n_stages = eng_.n_stages();
    st_.max_in_flight = target_;
    st_.free_slots = opt_.n_slots;
    st_.stage_busy_s.assign(eng_.n_stages(), 0.0);
}

std::shared_ptr<Sequence> Scheduler::submit(GenRequest r) {
    const int n = static_cast<int>(r.prompt.size());
    if (n < 1) PIPELM_THROW(ErrorCode::kInvalidArgument, "the prompt has no tokens");
    if (n >= opt_.n_ctx)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "the prompt has ", n, " tokens and the context holds ", opt_.n_ctx,
                     " (one more is needed for the answer): shorten the prompt or raise --ctx");
    if (r.max_tokens < 1) PIPELM_THROW(ErrorCode::kInvalidArgument, "max_tokens must be at least 1, got ", r.max_tokens);
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) PIPELM_THROW(ErrorCode::kCancelled, "the scheduler is shutting down");
    // Requests in waiting_ that free slots will take at the next step are not queued.
    if (static_cast<int>(waiting_.size()) >= opt_.max_queue + st_.free_slots) {
        ++st_.rejected;
        return nullptr;
    }
    std::shared_ptr<Sequence> s(new Sequence(next_id_++, std::move(r)));
    s->t_arrive_ = Clock::now();
    waiting_.push_back(s);
    ++st_.requests;
    st_.waiting = static_cast<int>(waiting_.size());
    work_cv_.notify_one();
    return s;
}

void Scheduler::close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    work_cv_.notify_all();
}

bool Scheduler::step(std::chrono::milliseconds idle) {
    try {
        reap();
        admit();
        while (eng_.in_flight() < target_ && submit_one()) {
        }
        hand_out();
        if (eng_.in_flight() == 0) {
            std::unique_lock<std::mutex> lock(mu_);
            work_cv_.wait_for(lock, idle, [this] { return !waiting_.empty() || closed_; });
            return false;
        }
        take_result();
        return true;
    } catch (const std::exception& e) {
        fail_all(e.what());
        throw;
    }
}

void Scheduler::run(const std::function<bool()>& stop) {
    while (!stop()) step(std::chrono::milliseconds(50));
    close();
    reap();
    try {
        while (eng_.in_flight() > 0) take_result();
        hand_out();
    } catch (const std::exception& e) {
        fail_all(e.what());
        throw;
    }
}

void Scheduler::reap() {
    std::vector<std::shared_ptr<Sequence>> gone;  // waiting ones first: they never had a slot
    bool closed = false;
    {
        std::lock_guard<std::mutex> lock(mu_);
        closed = closed_;
        for (auto it = waiting_.begin(); it != waiting_.end();) {
            if (closed || (*it)->cancelled()) {
                gone.push_back(*it);
                it = waiting_.erase(it);
            } else {
                ++it;
            }
        }
        st_.waiting = static_cast<int>(waiting_.size());
    }
    for (const auto& s : running_)
        if (closed || s->cancelled()) gone.push_back(s);
    for (const auto& s : gone) {
        const int why = s->cancel_.load();
        end(s, why != 0 && !closed ? static_cast<Finish>(why) : Finish::kCancelled);
    }
}

int Scheduler::pick_slot(const std::vector<int32_t>& prompt, int* reuse) const {
    // free_ is in the order slots were freed: on a tie the least recently used slot is taken,
    // which keeps the others' contents for later requests.
    int best = free_.front(), best_len = 0;
    if (opt_.reuse_prefix) {
        for (int slot : free_) {
            const auto& have = slot_tokens_[slot];
            const size_t lim = std::min(have.size(), prompt.size() - 1);  // the last token is always computed
            size_t l = 0;
            while (l < lim && have[l] == prompt[l]) ++l;
            if (static_cast<int>(l) > best_len) best = slot, best_len = static_cast<int>(l);
        }
    }
    *reuse = best_len;
    return best;
}

void Scheduler::admit() {
    while (!free_.empty()) {
        std::shared_ptr<Sequence> s;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (waiting_.empty()) break;
            s = waiting_.front();
            waiting_.pop_front();
            st_.waiting = static_cast<int>(waiting_.size());
        }
        int reuse = 0;
        const int slot = pick_slot(s->req_.prompt, &reuse);
        free_.erase(std::find(free_.begin(), free_.end(), slot));
        s->slot_ = slot;
        s->state_ = Sequence::State::kPrefill;
        s->n_sent_ = s->n_past_ = reuse;
        s->reused_.store(reuse);
        slot_tokens_[slot].resize(static_cast<size_t>(reuse));
        // The sampler keeps only the last repeat_last_n tokens for the penalty: send no more, and
        // at most kMaxHistory (the message must fit a link's control-size limit).
        const auto& p = s->req_.prompt;
        const size_t keep = std::min({p.size(), static_cast<size_t>(std::max(0, s->req_.sampler.repeat_last_n)),
                                      static_cast<size_t>(kMaxHistory)});
        eng_.start_seq(slot, s->req_.sampler, std::vector<int32_t>(p.end() - static_cast<ptrdiff_t>(keep), p.end()));
        running_.push_back(s);
        std::lock_guard<std::mutex> lock(mu_);
        st_.queue_time.add(secs(Clock::now() - s->t_arrive_));
        st_.prompt_tokens_reused += static_cast<uint64_t>(reuse);
        st_.running = static_cast<int>(running_.size());
        st_.free_slots = static_cast<int>(free_.size());
    }
}

bool Scheduler::submit_one() {
    const size_t budget = static_cast<size_t>(opt_.ubatch);
    std::vector<int32_t> tok, seq, pos, out;
    std::vector<Row> rows;
    // Decode tokens: running sequences are spread over target_ ubatches so that each stage gets
    // one group of them, as the results come back.
    int n_decoding = 0;
    for (const auto& s : running_)
        n_decoding += s->state_ == Sequence::State::kReady || s->state_ == Sequence::State::kDecoding;
    const size_t cap = std::min(budget, static_cast<size_t>((n_decoding + target_ - 1) / target_));
    size_t n_dec = 0;
    while (!ready_.empty() && n_dec < cap) {
        std::shared_ptr<Sequence> s = ready_.front();
        ready_.pop_front();
        out.push_back(static_cast<int32_t>(tok.size()));
        tok.push_back(s->last_);
        seq.push_back(s->slot_);
        pos.push_back(s->n_past_);
        slot_tokens_[s->slot_].push_back(s->last_);
        ++s->n_past_;
        s->state_ = Sequence::State::kDecoding;
        rows.push_back({s});
        ++n_dec;
    }
    // The rest of the budget: prompt chunks, in admission order.
    size_t n_prompt = 0;
    for (const auto& s : running_) {
        if (tok.size() >= budget) break;
        if (s->state_ != Sequence::State::kPrefill) continue;
        const auto& p = s->req_.prompt;
        const size_t take = std::min(budget - tok.size(), p.size() - static_cast<size_t>(s->n_sent_));
        for (size_t i = 0; i < take; ++i) {
            const int at = s->n_sent_ + static_cast<int>(i);
            tok.push_back(p[at]);
            seq.push_back(s->slot_);
            pos.push_back(at);
            slot_tokens_[s->slot_].push_back(p[at]);
        }
        s->n_sent_ += static_cast<int>(take);
        s->n_past_ = s->n_sent_;
        n_prompt += take;
        if (s->n_sent_ == static_cast<int>(p.size())) {
            out.push_back(static_cast<int32_t>(tok.size() - 1));
            rows.push_back({s});
            s->state_ = Sequence::State::kAwaitFirst;
        }
    }
    if (tok.empty()) return false;
    if (eng_.in_flight() == 0) t_active_ = Clock::now();
    eng_.submit(tok, seq, pos, out, /*sample=*/true, /*want_logits=*/false);
    flights_.push_back(std::move(rows));
    std::lock_guard<std::mutex> lock(mu_);
    ++st_.ubatches;
    st_.ubatch_tokens += tok.size();
    st_.prompt_tokens += n_prompt;
    if (n_dec > 0 && n_prompt > 0) ++st_.mixed_ubatches;
    return true;
}

void Scheduler::take_result() {
    const bool full = eng_.in_flight() >= target_;
    Result r = eng_.next_result();
    PIPELM_CHECK(!flights_.empty(), "scheduler: a result with no ubatch in flight");
    std::vector<Row> rows = std::move(flights_.front());
    flights_.pop_front();
    if (r.header.tokens.size() != rows.size())
        PIPELM_THROW(ErrorCode::kInternal, "scheduler: ", r.header.tokens.size(), " sampled ids for ", rows.size(),
                     " outputs");
    const auto now = Clock::now();
    uint64_t dropped = 0, generated = 0;
    std::vector<double> ttft, itl;
    for (size_t i = 0; i < rows.size(); ++i) {
        const std::shared_ptr<Sequence>& s = rows[i].seq;
        const int32_t t = r.header.tokens[i];
        if (s->state_ == Sequence::State::kDone) {
            ++dropped;
            continue;
        }
        (s->n_gen_ == 0 ? ttft : itl).push_back(secs(now - (s->n_gen_ == 0 ? s->t_arrive_ : s->t_last_)));
        s->t_last_ = now;
        ++s->n_gen_;
        ++generated;
        if (!s->req_.ignore_eos && std::find(opt_.eog.begin(), opt_.eog.end(), t) != opt_.eog.end()) {
            end(s, Finish::kStop);
            continue;
        }
        to_hand_out_.emplace_back(s, t);
        if (s->n_gen_ >= s->req_.max_tokens || s->n_past_ >= opt_.n_ctx) {
            end(s, Finish::kLength);
            continue;
        }
        s->last_ = t;
        s->state_ = Sequence::State::kReady;
        ready_.push_back(s);
    }
    if (!eng_.submits_async()) hand_out();
    std::lock_guard<std::mutex> lock(mu_);
    ++st_.waits;
    st_.full_waits += full;
    st_.dropped_outputs += dropped;
    st_.generated_tokens += generated;
    for (double v : ttft) st_.ttft.add(v);
    for (double v : itl) st_.itl.add(v);
    st_.stage_busy_s = eng_.stats().busy_s;
    if (eng_.in_flight() == 0) st_.active_s += secs(now - t_active_);
    const auto& rec = eng_.recoveries();
    for (size_t i = st_.recoveries; i < rec.size(); ++i) {
        st_.recovery_s += rec[i].seconds;
        st_.recovery_tokens_replayed += static_cast<uint64_t>(rec[i].tokens_replayed);
        PIPELM_INFO(recovery_lines({rec[i]})[0]);
    }
    st_.recoveries = rec.size();
}

void Scheduler::hand_out() {
    for (const auto& [s, t] : to_hand_out_) s->deliver(t, Finish::kNone, "");
    to_hand_out_.clear();
}

void Scheduler::end(const std::shared_ptr<Sequence>& s, Finish f, const std::string& error) {
    if (s->state_ == Sequence::State::kDone) return;
    hand_out();  // a client gets its tokens before its end
    s->state_ = Sequence::State::kDone;
    if (s->slot_ >= 0) {
        free_.push_back(s->slot_);
        s->slot_ = -1;
    }
    running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
    ready_.erase(std::remove(ready_.begin(), ready_.end(), s), ready_.end());
    {
        // Before the client learns of the end: its next request must find the slot free.
        std::lock_guard<std::mutex> lock(mu_);
        switch (f) {
            case Finish::kStop: ++st_.finished_stop; break;
            case Finish::kLength: ++st_.finished_length; break;
            case Finish::kCancelled: ++st_.cancelled; break;
            case Finish::kError: ++st_.failed; break;
            case Finish::kNone: break;
        }
        st_.running = static_cast<int>(running_.size());
        st_.free_slots = static_cast<int>(free_.size());
        recent_ends_.push_back(Clock::now());
        if (recent_ends_.size() > 64) recent_ends_.pop_front();
    }
    s->deliver(-1, f, error);
}

void Scheduler::fail_all(const std::string& why) {
    std::vector<std::shared_ptr<Sequence>> all = running_;
    {
        std::lock_guard<std::mutex> lock(mu_);
        closed_ = true;
        all.insert(all.end(), waiting_.begin(), waiting_.end());
        waiting_.clear();
        st_.waiting = 0;
    }
    for (const auto& s : all) end(s, Finish::kError, why);
    flights_.clear();
}

SchedulerStats Scheduler::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return st_;
}

int Scheduler::retry_after_s() const {
    std::lock_guard<std::mutex> lock(mu_);
    const double queued = static_cast<double>(waiting_.size()) + 1;
    double rate = 0;  // requests ending per second, over the last (up to) 64
    if (recent_ends_.size() >= 2) {
        const double span = secs(recent_ends_.back() - recent_ends_.front());
        if (span > 0) rate = static_cast<double>(recent_ends_.size() - 1) / span;
    }
    const double wait = rate > 0 ? queued / rate : queued;
    return static_cast<int>(std::clamp(std::ceil(wait), 1.0, 60.0));
}

}  // namespace pipelm::pipeline
