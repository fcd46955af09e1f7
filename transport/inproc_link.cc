// In-process Link: two ends sharing one mutex, one condition variable and a queue per direction.
#include "transport/inproc_link.h"

#include <condition_variable>
#include <deque>
#include <mutex>

#include "runtime/base/error.h"
#include "transport/wait_util.h"

namespace pipelm::transport {
namespace {

struct EndState {
    std::string name;             // this end's name, as its peer reports it
    std::deque<Message> inbox;    // messages for this end
    bool aborted = false;
    bool gone = false;
    std::string reason;
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
};

struct Channel {
    std::mutex mu;
    std::condition_variable cv;
    EndState ends[2];
    size_t max_queued = 64;
};

class InprocLink final : public Link {
public:
    InprocLink(std::shared_ptr<Channel> channel, int side) : ch_(std::move(channel)), side_(side) {}

    ~InprocLink() override {
        std::lock_guard<std::mutex> lock(ch_->mu);
        me().gone = true;
        ch_->cv.notify_all();
    }

    void send(Message msg) override {
        if (msg.kind == MsgKind::kAbort) {
            abort(msg.control);
            return;
        }
        const uint64_t bytes = msg.control.size() + msg.payload.size();
        std::unique_lock<std::mutex> lock(ch_->mu);
        for (;;) {
            check_failures_locked();
            if (peer().gone)
                PIPELM_THROW(ErrorCode::kPeerLost, "cannot send to ", peer().name, ": it closed the link");
            if (peer().inbox.size() < ch_->max_queued) break;
            ch_->cv.wait(lock);
        }
        peer().inbox.push_back(std::move(msg));
        me().bytes_sent += bytes;
        ch_->cv.notify_all();
    }

    Message recv(std::chrono::milliseconds timeout) override {
        const auto deadline = detail::deadline_after(timeout);
        std::unique_lock<std::mutex> lock(ch_->mu);
        for (;;) {
            check_failures_locked();
            if (!me().inbox.empty()) {
                Message m = std::move(me().inbox.front());
                me().inbox.pop_front();
                me().bytes_received += m.control.size() + m.payload.size();
                ch_->cv.notify_all();  // a sender may wait for room
                return m;
            }
            if (peer().gone) PIPELM_THROW(ErrorCode::kPeerLost, peer().name, " closed the link");
            if (ch_->cv.wait_until(lock, deadline) == std::cv_status::timeout && me().inbox.empty()) {
                check_failures_locked();
                if (peer().gone) PIPELM_THROW(ErrorCode::kPeerLost, peer().name, " closed the link");
                PIPELM_THROW(ErrorCode::kTimeout, "no message from ", peer().name, " within ",
                             detail::format_seconds(timeout));
            }
        }
    }

    void abort(const std::string& reason) noexcept override {
        std::lock_guard<std::mutex> lock(ch_->mu);
        if (me().aborted) return;
        me().aborted = true;
        me().reason = reason;
        me().inbox.clear();
        ch_->cv.notify_all();
    }

    void flush() override {
        std::lock_guard<std::mutex> lock(ch_->mu);
        check_failures_locked();
    }

    std::string peer_name() const override { return ch_->ends[1 - side_].name; }

    uint64_t bytes_sent() const override {
        std::lock_guard<std::mutex> lock(ch_->mu);
        return ch_->ends[side_].bytes_sent;
    }
    uint64_t bytes_received() const override {
        std::lock_guard<std::mutex> lock(ch_->mu);
        return ch_->ends[side_].bytes_received;
    }

private:
    EndState& me() { return ch_->ends[side_]; }
    EndState& peer() { return ch_->ends[1 - side_]; }

    void check_failures_locked() {
        if (me().aborted)
            PIPELM_THROW(ErrorCode::kCancelled, "link to ", peer().name, " was aborted: ", me().reason);
        if (peer().aborted) PIPELM_THROW(ErrorCode::kPeerLost, peer().name, " aborted: ", peer().reason);
    }

    std::shared_ptr<Channel> ch_;
    int side_;
};

}  // namespace

std::pair<std::shared_ptr<Link>, std::shared_ptr<Link>> make_inproc_pair(std::string name_a,
                                                                       std::string name_b,
                                                                       size_t max_queued) {
    PIPELM_CHECK(max_queued > 0, "make_inproc_pair: max_queued must be positive");
    auto ch = std::make_shared<Channel>();
    ch->ends[0].name = std::move(name_a);
    ch->ends[1].name = std::move(name_b);
    ch->max_queued = max_queued;
    return {std::make_shared<InprocLink>(ch, 0), std::make_shared<InprocLink>(ch, 1)};
}

std::vector<StageLinks> make_inproc_pipeline(int n_stages, size_t max_queued) {
    PIPELM_CHECK(n_stages >= 1, "make_inproc_pipeline: need at least one stage, got ", n_stages);
    auto name = [](int s) { return ::pipelm::detail::concat("stage ", s, " (inproc)"); };
    std::vector<StageLinks> links(static_cast<size_t>(n_stages));
    for (int s = 0; s + 1 < n_stages; ++s) {
        auto [a, b] = make_inproc_pair(name(s), name(s + 1), max_queued);
        links[s].next = a;
        links[s + 1].prev = b;
    }
    if (n_stages >= 2) {
        const int last = n_stages - 1;
        auto [a, b] = make_inproc_pair(name(0), name(last), max_queued);
        links[0].ring = a;
        links[last].ring = b;
    }
    return links;
}

}  // namespace pipelm::transport
