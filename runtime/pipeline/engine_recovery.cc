// Engine recovery: the coordinator's side of "lose a worker, keep the answer" (TCP mode with
// --standby; docs/design-notes.md, "Recovery").
//
// Model: when a send or receive of the coordinator fails with kPeerLost, EngineOptions::relink
// re-forms the whole pipeline (the lost stage's layer range on a standby, every other stage on
// its old worker, each with a fresh, empty KV cache; with no standby left and --mem room, the
// surviving workers share the lost layers instead, stage 0's range unchanged). The engine then
//   1. checks the new pipeline (handshake),
//   2. sends every started slot's sampler as it was after the results already returned
//      (SeqResume: its parameters, the last repeat_last_n tokens it accepted, its draw count),
//   3. replays every logged token of every slot, position by position from 0, in chunks of
//      --ubatch with no outputs: every stage writes the same K/V it held (stage 0 writes the
//      rows it still has again, with the same bytes),
//   4. sends the ubatches that were in flight again, with their ids, in their order.
// Callers then get their results as if nothing happened: results stay in submission order, none
// is lost or returned twice. Exact because a token's K/V and outputs depend only on the tokens
// at positions <= its own (split and batch invariance, DESIGN.md §3), never on how the tokens
// were grouped into ubatches.
//
// Threading: the driver's thread, with stage 0's thread idle (Engine::quiesce() first).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "runtime/base/log.h"
#include "runtime/pipeline/stage_runner.h"

namespace pipelm::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

// The last `n` of `prefix` followed by `tail` (n <= 0: none).
std::vector<int32_t> last_n(const std::vector<int32_t>& prefix, const std::vector<int32_t>& tail, int n) {
    std::vector<int32_t> all = prefix;
    all.insert(all.end(), tail.begin(), tail.end());
    if (n <= 0) return {};
    if (all.size() > static_cast<size_t>(n)) all.erase(all.begin(), all.end() - n);
    return all;
}

}  // namespace

Result Engine::receive_result() {
    transport::Message m = links_.ring->recv(opt_.result_timeout);
    if (m.kind != transport::MsgKind::kData || m.tag != kResult)
        PIPELM_THROW(ErrorCode::kProtocol, "expected a result from the last stage (", links_.ring->peer_name(),
                     "), got tag ", m.tag);
    PIPELM_CHECK(!asked_.empty(), "next_result: no ubatch in flight to the last stage");
    Result r;
    r.header = decode<ResultHeader>(m.control, "result");
    check_result(r.header, m.payload.size(), asked_.front());
    if (!asked_.front().replay) log_result(asked_.front(), r.header);
    asked_.pop_front();
    r.logits.resize(m.payload.size() / sizeof(float));
    if (!m.payload.empty()) std::memcpy(r.logits.data(), m.payload.data(), m.payload.size());
    return r;
}

// Called with each result of the caller's ubatches (not of replays), in order.
void Engine::log_result(const Asked& a, const ResultHeader& r) {
    for (size_t t = 0; t < a.tokens.size(); ++t) {
        std::vector<int32_t>& tokens = slots_[a.seq[t]].tokens;
        const auto p = static_cast<size_t>(a.pos[t]);
        tokens.resize(p, -1);  // a position written again drops what followed it
        tokens.push_back(a.tokens[t]);
    }
    for (size_t i = 0; i < r.tokens.size(); ++i) slots_[r.seq[i]].sampled.push_back(r.tokens[i]);
}

void Engine::recover(const Error& first) {
    const auto t0 = Clock::now();
    // The caller's ubatches in flight, oldest first (a failed recovery may have left replays).
    std::deque<Asked> pending;
    for (auto& a : asked_)
        if (!a.replay) pending.push_back(a);
    Error cause = first;
    std::string replaced;
    for (int attempt = 0;; ++attempt) {
        if (attempt >= opt_.max_recoveries || static_cast<int>(recoveries_.size()) >= opt_.max_recoveries)
            PIPELM_THROW(ErrorCode::kPeerLost, "giving up after ", opt_.max_recoveries, " recoveries: ", cause.what());
        PIPELM_WARN("pipeline broken (", cause.what(), "): re-forming it");
        Relinked r = opt_.relink(cause);  // throws when nothing is lost or no standby is left
        links_ = r.links;
        if (!r.plan.empty()) {  // fewer stages now: the survivors hold the lost layers
            PIPELM_CHECK(r.plan.front().first == opt_.plan.front().first && r.plan.front().last == opt_.plan.front().last,
                         "relink moved stage 0's layers");
            opt_.plan = r.plan;
            opt_.n_stages = static_cast<int>(r.plan.size());
            stats_.busy_s.assign(opt_.n_stages, 0.0);  // the old stages are gone: their times restart
        }
        replaced += (replaced.empty() ? "" : "; ") + r.replaced;
        asked_.clear();
        try {
            handshake();
            for (int s = 0; s < opt_.n_seq; ++s) {
                const SlotLog& log = slots_[s];
                if (!log.started) continue;
                SeqResume res;
                res.start = log.start;
                res.start.history = last_n(log.start.history, log.sampled, log.start.sampler.repeat_last_n);
                res.draws = log.sampled.size();
                links_.next->send(make_message(kSeqResume, res));
            }
            const int64_t replayed = replay_tokens();
            for (const Asked& a : pending) {
                asked_.push_back(a);
                send_ubatch(asked_.back());
            }
            const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
            recoveries_.push_back(Recovery{replaced, first.what(), secs, replayed});
            PIPELM_INFO("recovered: ", replaced, " in ", secs, " s, ", replayed, " tokens replayed, ", pending.size(),
                        " ubatch(es) sent again");
            return;
        } catch (const Error& e) {
            if (e.code() != ErrorCode::kPeerLost) throw;
            cause = e;  // lost another stage while recovering: re-form again
        }
    }
}

int64_t Engine::replay_tokens() {
    int64_t replayed = 0;
    auto flush_chunk = [&](Asked& a) {
        if (a.tokens.empty()) return;
        a.id = next_id_++;
        a.replay = true;
        replayed += static_cast<int64_t>(a.tokens.size());
        asked_.push_back(std::move(a));
        send_ubatch(asked_.back());
        a = Asked{};
        // At most S ubatches in flight, as prefill_logits keeps.
        while (static_cast<int>(asked_.size()) > opt_.n_stages) receive_result();
    };
    for (int s = 0; s < opt_.n_seq; ++s) {
        const std::vector<int32_t>& tokens = slots_[s].tokens;
        Asked a;
        for (size_t p = 0; p < tokens.size(); ++p) {
            if (tokens[p] < 0) continue;  // never written since the slot started: nothing to rebuild
            a.tokens.push_back(tokens[p]);
            a.seq.push_back(s);
            a.pos.push_back(static_cast<int32_t>(p));
            if (static_cast<int>(a.tokens.size()) == opt_.ubatch) flush_chunk(a);
        }
        flush_chunk(a);
    }
    while (!asked_.empty()) receive_result();
    return replayed;
}

std::vector<std::string> recovery_lines(const std::vector<Recovery>& rs) {
    std::vector<std::string> out;
    for (const Recovery& r : rs) {
        char buf[96];
        std::snprintf(buf, sizeof buf, " in %.3f s, %lld tokens replayed", r.seconds,
                      static_cast<long long>(r.tokens_replayed));
        out.push_back("recovery: " + r.replaced + buf + " (cause: " + r.cause + ")");
    }
    return out;
}

}  // namespace pipelm::pipeline
