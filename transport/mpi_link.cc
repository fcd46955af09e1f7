// MpiLink: frames over MPI point-to-point, a sender thread per link, polled receives (see
// mpi_link.h). Compiled to nothing when PIPELM_WITH_MPI is 0 (mpi_env.cc has the stubs).
#include "transport/mpi_link.h"

#if PIPELM_WITH_MPI

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "runtime/base/error.h"
#include "transport/frame.h"
#include "transport/wait_util.h"

namespace pipelm::transport {
namespace {

using detail::Clock;
using namespace std::chrono_literals;

constexpr size_t kChunkBytes = size_t(4) << 20;  // payload pieces: int counts, visible progress
constexpr int kChainChannel = 1;
constexpr int kRingChannel = 2;

std::string mpi_error_string(int rc) {
    char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, buf, &len);
    return std::string(buf, static_cast<size_t>(len));
}

#define PIPELM_MPI_CHECK(expr)                                                                  \
    do {                                                                                        \
        const int rc_ = (expr);                                                                 \
        if (rc_ != MPI_SUCCESS)                                                                 \
            PIPELM_THROW(::pipelm::ErrorCode::kMpi, #expr, " failed: ", mpi_error_string(rc_)); \
    } while (0)

struct OutFrame {
    wire::FrameKind kind;
    Message msg;
};

// A frame handed to MPI: header + control in `head`, the payload sent from frame.msg in place.
struct InFlight {
    OutFrame frame;
    std::vector<uint8_t> head;
    std::vector<MPI_Request> reqs;
    size_t left = 0;        // requests not yet complete
    std::vector<int> done;  // scratch for MPI_Testsome
};

// Buffers MPI may still write or read after we gave up on a request: kept alive on purpose
// (the failure path of a stalled peer; the job is ending).
template <typename T>
void keep_forever(std::unique_ptr<T> buffers) {
    static_cast<void>(buffers.release());
}

class MpiLink final : public Link {
public:
    MpiLink(MPI_Comm comm, int peer, int tag, std::string name, const MpiLinkOptions& options)
        : comm_(comm), peer_(peer), tag_(tag), name_(std::move(name)), opts_(options) {
        if (opts_.heartbeat_interval.count() <= 0)
            opts_.heartbeat_interval = std::max(opts_.peer_timeout / 4, std::chrono::milliseconds(5));
        if (opts_.max_queued == 0) opts_.max_queued = 1;
        sender_ = std::thread([this] { sender_main(); });
    }

    ~MpiLink() override {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stopping_ = true;
            give_up_ = std::min(give_up_, Clock::now() + opts_.close_linger);
            cv_.notify_all();
        }
        sender_.join();
    }

    void send(Message msg) override {
        if (msg.kind == MsgKind::kAbort) {
            abort(msg.control);
            return;
        }
        const wire::FrameKind kind = wire::frame_kind(msg.kind);
        if (msg.control.size() > opts_.limits.max_control_bytes || msg.payload.size() > opts_.limits.max_payload_bytes)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "message for ", name_, " has ", msg.control.size(),
                         " control and ", msg.payload.size(), " payload bytes, over the link limits of ",
                         opts_.limits.max_control_bytes, " and ", opts_.limits.max_payload_bytes);
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return failure_ || outbox_.size() < opts_.max_queued; });
        if (failure_) throw Error(failure_->code, failure_->message);
        outbox_.push_back(OutFrame{kind, std::move(msg)});
        ++enqueued_seq_;
        cv_.notify_all();
    }

    Message recv(std::chrono::milliseconds timeout) override {
        std::lock_guard<std::mutex> receiving(recv_mu_);
        const auto deadline = detail::deadline_after(timeout);
        last_heard_ = Clock::now();
        detail::PollBackoff backoff;
        for (;;) {
            throw_if_failed();
            int flag = 0;
            MPI_Message mm;
            MPI_Status st;
            guarded([&] { PIPELM_MPI_CHECK(MPI_Improbe(peer_, tag_, comm_, &flag, &mm, &st)); });
            if (flag) {
                backoff.progressed();
                last_heard_ = Clock::now();
                wire::FrameHeader h;
                Message m = guarded([&] { return receive_frame(mm, st, &h); });
                switch (h.kind) {
                    case wire::FrameKind::kHeartbeat: continue;
                    case wire::FrameKind::kAbort: fail(ErrorCode::kPeerLost, name_ + " aborted: " + m.control); continue;
                    case wire::FrameKind::kClose: fail(ErrorCode::kPeerLost, name_ + " closed the link"); continue;
                    case wire::FrameKind::kData:
                    case wire::FrameKind::kShutdown: break;
                }
                m.kind = wire::message_kind(h.kind);
                bytes_received_ += m.control.size() + m.payload.size();
                return m;
            }
            const auto now = Clock::now();
            if (now - last_heard_ > opts_.peer_timeout) {
                fail(ErrorCode::kPeerLost, "no data or heartbeat from " + name_ + " for " +
                                               detail::format_seconds(opts_.peer_timeout) +
                                               ": the peer rank is stuck or gone");
                continue;
            }
            if (now >= deadline)
                PIPELM_THROW(ErrorCode::kTimeout, "no message from ", name_, " within ", detail::format_seconds(timeout));
            backoff.wait();
        }
    }

    void abort(const std::string& reason) noexcept override {
        try {
            std::lock_guard<std::mutex> lock(mu_);
            if (failure_) return;
            failure_ = Failure{ErrorCode::kCancelled, "link to " + name_ + " was aborted: " + reason};
            abort_reason_ = reason;
            abort_requested_ = true;
            outbox_.clear();
            give_up_ = Clock::now() + 1s;
            cv_.notify_all();
        } catch (...) {
            // allocation failure: the link stays usable, the peer is not told
        }
    }

    void flush() override {
        std::unique_lock<std::mutex> lock(mu_);
        const uint64_t target = enqueued_seq_;
        cv_.wait(lock, [&] { return failure_ || written_seq_ >= target; });
        if (written_seq_ < target) throw Error(failure_->code, failure_->message);
    }

    std::string peer_name() const override { return name_; }
    uint64_t bytes_sent() const override { return bytes_sent_; }
    uint64_t bytes_received() const override { return bytes_received_; }

private:
    struct Failure {
        ErrorCode code;
        std::string message;
    };

    void fail(ErrorCode code, std::string message) {
        std::lock_guard<std::mutex> lock(mu_);
        if (failure_) return;
        failure_ = Failure{code, std::move(message)};
        outbox_.clear();
        give_up_ = std::min(give_up_, Clock::now() + 1s);
        cv_.notify_all();
    }

    void throw_if_failed() {
        std::lock_guard<std::mutex> lock(mu_);
        if (failure_) throw Error(failure_->code, failure_->message);
    }

    // Runs f(); an Error from it fails the link (first failure wins) and is rethrown.
    template <typename F>
    auto guarded(F&& f) -> decltype(f()) {
        try {
            return f();
        } catch (const Error& e) {
            fail(e.code(), e.what());
            throw;
        }
    }

    // ---- receive side (caller's thread) ----------------------------------------------------
    Message receive_frame(MPI_Message& mm, const MPI_Status& st, wire::FrameHeader* h) {
        int count = 0;
        PIPELM_MPI_CHECK(MPI_Get_count(&st, MPI_BYTE, &count));
        if (count < static_cast<int>(wire::kFrameHeaderBytes) ||
            static_cast<size_t>(count) - wire::kFrameHeaderBytes > opts_.limits.max_control_bytes)
            PIPELM_THROW(ErrorCode::kProtocol, "malformed frame from ", name_, ": ", count,
                         " bytes of header and control (at most ",
                         wire::kFrameHeaderBytes + opts_.limits.max_control_bytes, ")");
        auto head = std::make_unique<std::vector<uint8_t>>(static_cast<size_t>(count));
        std::vector<MPI_Request> reqs(1);
        PIPELM_MPI_CHECK(MPI_Imrecv(head->data(), count, MPI_BYTE, &mm, &reqs[0]));
        wait_requests(reqs, {count}, head, "a frame header");
        *h = wire::decode_frame_header(head->data(), opts_.limits, name_);
        if (h->control_bytes != static_cast<size_t>(count) - wire::kFrameHeaderBytes)
            PIPELM_THROW(ErrorCode::kProtocol, "malformed frame from ", name_, ": header announces ", h->control_bytes,
                         " control bytes, the message holds ", count - int(wire::kFrameHeaderBytes));
        Message m;
        m.tag = h->tag;
        m.control.assign(reinterpret_cast<const char*>(head->data()) + wire::kFrameHeaderBytes, h->control_bytes);
        // All chunks are posted at once so MPI can overlap them; they match in send order.
        auto payload = std::make_unique<std::vector<uint8_t>>(static_cast<size_t>(h->payload_bytes));
        std::vector<int> sizes;
        reqs.clear();
        for (size_t off = 0; off < payload->size(); off += kChunkBytes) {
            sizes.push_back(static_cast<int>(std::min(kChunkBytes, payload->size() - off)));
            reqs.push_back(MPI_REQUEST_NULL);
            PIPELM_MPI_CHECK(MPI_Irecv(payload->data() + off, sizes.back(), MPI_BYTE, peer_, tag_, comm_, &reqs.back()));
        }
        if (!reqs.empty()) wait_requests(reqs, sizes, payload, "a payload");
        m.payload = std::move(*payload);
        return m;
    }

    // Polls `reqs` (receives of sizes[i] bytes each) until all complete; throws when the link
    // fails locally, the peer is silent for peer_timeout, or a piece is short (kProtocol). On a
    // throw the pending requests are cancelled; if MPI cannot cancel them, `buffer` is left to it.
    template <typename Buffer>
    void wait_requests(std::vector<MPI_Request>& reqs, const std::vector<int>& sizes, std::unique_ptr<Buffer>& buffer,
                       const char* what) {
        try {
            poll_requests(reqs, sizes, what);
        } catch (...) {
            if (cancel_all(reqs)) keep_forever(std::move(buffer));
            throw;
        }
    }

    void poll_requests(std::vector<MPI_Request>& reqs, const std::vector<int>& sizes, const char* what) {
        detail::PollBackoff backoff;
        backoff.progressed();  // the peer is sending right now
        std::vector<int> done(reqs.size());
        std::vector<MPI_Status> st(reqs.size());
        for (size_t left = reqs.size(); left > 0;) {
            int n = 0;
            PIPELM_MPI_CHECK(MPI_Testsome(static_cast<int>(reqs.size()), reqs.data(), &n, done.data(), st.data()));
            if (n != MPI_UNDEFINED && n > 0) {
                for (int i = 0; i < n; ++i) {
                    int got = 0;
                    PIPELM_MPI_CHECK(MPI_Get_count(&st[i], MPI_BYTE, &got));
                    const int want = sizes[static_cast<size_t>(done[i])];
                    if (got != want)
                        PIPELM_THROW(ErrorCode::kProtocol, "malformed frame from ", name_, ": ", what, " piece of ",
                                     got, " bytes, expected ", want);
                }
                left -= static_cast<size_t>(n);
                last_heard_ = Clock::now();
                backoff.progressed();
                continue;
            }
            throw_if_failed();
            if (Clock::now() - last_heard_ > opts_.peer_timeout)
                PIPELM_THROW(ErrorCode::kPeerLost, "receiving ", what, " from ", name_, " stalled for ",
                             detail::format_seconds(opts_.peer_timeout), ": the peer rank is stuck or gone");
            backoff.wait();
        }
    }

    // Cancels and frees every pending request; true if some could not be cancelled (MPI may
    // still touch their buffers).
    static bool cancel_all(std::vector<MPI_Request>& reqs) {
        bool stuck = false;
        for (MPI_Request& r : reqs) {
            if (r == MPI_REQUEST_NULL) continue;
            MPI_Cancel(&r);
            int done = 0;
            MPI_Test(&r, &done, MPI_STATUS_IGNORE);
            if (!done) {
                MPI_Request_free(&r);
                stuck = true;
            }
        }
        return stuck;
    }

    // ---- send side (sender thread) -----------------------------------------------------------
    std::unique_ptr<InFlight> post(OutFrame frame) {
        auto f = std::make_unique<InFlight>();
        f->frame = std::move(frame);
        const Message& m = f->frame.msg;
        wire::FrameHeader h;
        h.kind = f->frame.kind;
        h.tag = m.tag;
        h.control_bytes = static_cast<uint32_t>(m.control.size());
        h.payload_bytes = m.payload.size();
        f->head.resize(wire::kFrameHeaderBytes + m.control.size());
        wire::encode_frame_header(h, f->head.data());
        std::memcpy(f->head.data() + wire::kFrameHeaderBytes, m.control.data(), m.control.size());
        f->reqs.reserve(1 + m.payload.size() / kChunkBytes + 1);
        MPI_Request req;
        PIPELM_MPI_CHECK(MPI_Isend(f->head.data(), static_cast<int>(f->head.size()), MPI_BYTE, peer_, tag_, comm_, &req));
        f->reqs.push_back(req);
        for (size_t off = 0; off < m.payload.size(); off += kChunkBytes) {
            const int n = static_cast<int>(std::min(kChunkBytes, m.payload.size() - off));
            PIPELM_MPI_CHECK(MPI_Isend(m.payload.data() + off, n, MPI_BYTE, peer_, tag_, comm_, &req));
            f->reqs.push_back(req);
        }
        f->left = f->reqs.size();
        return f;
    }

    // Tests the requests of `f`: returns whether any completed; `f.left` counts the rest.
    static bool progress(InFlight& f) {
        int n = 0;
        f.done.resize(f.reqs.size());
        PIPELM_MPI_CHECK(MPI_Testsome(static_cast<int>(f.reqs.size()), f.reqs.data(), &n, f.done.data(),
                                      MPI_STATUSES_IGNORE));
        if (n == MPI_UNDEFINED || n == 0) return false;
        f.left -= static_cast<size_t>(n);
        return true;
    }

    static void abandon(std::unique_ptr<InFlight> f) {
        if (cancel_all(f->reqs)) keep_forever(std::move(f));
    }

    OutFrame control_frame(wire::FrameKind kind, std::string control = {}) {
        Message m;
        m.control = std::move(control);
        return OutFrame{kind, std::move(m)};
    }

    void sender_main();
    // One step of the sender loop; returns false when the thread is done.
    bool sender_step(std::vector<std::unique_ptr<InFlight>>& inflight, bool& final_posted, detail::PollBackoff& backoff);

    MPI_Comm comm_;
    const int peer_;
    const int tag_;
    const std::string name_;
    MpiLinkOptions opts_;

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<OutFrame> outbox_;
    std::optional<Failure> failure_;
    bool abort_requested_ = false;
    std::string abort_reason_;
    bool stopping_ = false;
    Clock::time_point give_up_ = Clock::time_point::max();
    uint64_t enqueued_seq_ = 0;
    uint64_t written_seq_ = 0;

    std::mutex recv_mu_;  // one receiver at a time; guards last_heard_
    Clock::time_point last_heard_;

    std::atomic<uint64_t> bytes_sent_{0};
    std::atomic<uint64_t> bytes_received_{0};
    std::thread sender_;
};

void MpiLink::sender_main() {
    std::vector<std::unique_ptr<InFlight>> inflight;
    bool final_posted = false;
    detail::PollBackoff backoff;
    for (;;) {
        try {
            if (!sender_step(inflight, final_posted, backoff)) return;
        } catch (const Error& e) {
            fail(e.code(), e.what());
            for (auto& f : inflight) abandon(std::move(f));
            inflight.clear();
            final_posted = true;  // MPI itself failed: do not try more
        }
    }
}

bool MpiLink::sender_step(std::vector<std::unique_ptr<InFlight>>& inflight, bool& final_posted,
                          detail::PollBackoff& backoff) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!final_posted && abort_requested_) {  // the abort frame goes right behind what is in flight
        const std::string reason = abort_reason_;
        lock.unlock();
        final_posted = true;
        inflight.push_back(post(control_frame(wire::FrameKind::kAbort, reason)));
        return true;
    }
    if (!final_posted && stopping_ && (outbox_.empty() || Clock::now() > give_up_) && inflight.empty()) {
        const bool tell_peer = !failure_;
        outbox_.clear();
        give_up_ = Clock::now() + 1s;
        lock.unlock();
        final_posted = true;
        if (tell_peer) inflight.push_back(post(control_frame(wire::FrameKind::kClose)));
        return true;
    }
    if (inflight.empty()) {
        if (final_posted) return false;
        if (!outbox_.empty()) {
            OutFrame f = std::move(outbox_.front());
            outbox_.pop_front();
            cv_.notify_all();  // room for a blocked send()
            lock.unlock();
            inflight.push_back(post(std::move(f)));
            backoff.progressed();
            return true;
        }
        if (stopping_) return true;
        const bool woke = cv_.wait_for(lock, opts_.heartbeat_interval,
                                       [this] { return !outbox_.empty() || stopping_ || abort_requested_; });
        if (!woke && !failure_) {
            lock.unlock();
            inflight.push_back(post(control_frame(wire::FrameKind::kHeartbeat)));
        }
        return true;
    }
    const auto give_up = give_up_;
    lock.unlock();
    bool progressed = false;
    for (auto it = inflight.begin(); it != inflight.end();) {
        progressed = progress(**it) || progressed;
        if ((*it)->left > 0) {
            ++it;
            continue;
        }
        const OutFrame& f = (*it)->frame;
        if (f.kind == wire::FrameKind::kData || f.kind == wire::FrameKind::kShutdown) {
            std::lock_guard<std::mutex> relock(mu_);
            bytes_sent_ += f.msg.control.size() + f.msg.payload.size();
            ++written_seq_;
            cv_.notify_all();
        }
        it = inflight.erase(it);
    }
    if (progressed) {
        backoff.progressed();
        return true;
    }
    if (Clock::now() > give_up) {
        for (auto& f : inflight) abandon(std::move(f));
        inflight.clear();
        return true;
    }
    backoff.wait();
    return true;
}

std::string stage_name(int rank) { return ::pipelm::detail::concat("stage ", rank, " (mpi rank ", rank, ")"); }

std::shared_ptr<Link> open_link(MpiEnv& env, int peer, int channel, std::string name, const MpiLinkOptions& options) {
    PIPELM_CHECK(peer >= 0 && peer < env.size() && peer != env.rank(), "MPI link: peer rank ", peer,
                 " is not another rank of this job (size ", env.size(), ", this rank ", env.rank(), ")");
    int* tag_ub = nullptr;
    int flag = 0;
    MPI_Comm_get_attr(env.comm(), MPI_TAG_UB, &tag_ub, &flag);
    const int max_tag = flag && tag_ub ? *tag_ub : 32767;
    PIPELM_CHECK(channel >= 1 && channel <= max_tag, "MPI link: channel ", channel, " out of range 1..", max_tag);
    return std::make_shared<MpiLink>(env.comm(), peer, channel, std::move(name), options);
}

}  // namespace

StageLinks make_mpi_links(MpiEnv& env, const MpiLinkOptions& options) {
    StageLinks links;
    const int r = env.rank();
    const int last = env.size() - 1;
    if (r > 0) links.prev = open_link(env, r - 1, kChainChannel, stage_name(r - 1), options);
    if (r < last) links.next = open_link(env, r + 1, kChainChannel, stage_name(r + 1), options);
    if (last >= 1 && r == 0) links.ring = open_link(env, last, kRingChannel, stage_name(last), options);
    if (last >= 1 && r == last) links.ring = open_link(env, 0, kRingChannel, stage_name(0), options);
    return links;
}

std::shared_ptr<Link> make_mpi_link(MpiEnv& env, int peer_rank, int channel, const MpiLinkOptions& options) {
    PIPELM_CHECK(channel != kChainChannel && channel != kRingChannel, "MPI link: channels 1 and 2 belong to make_mpi_links");
    return open_link(env, peer_rank, channel, ::pipelm::detail::concat("mpi rank ", peer_rank, " (channel ", channel, ")"), options);
}

}  // namespace pipelm::transport

#endif  // PIPELM_WITH_MPI
