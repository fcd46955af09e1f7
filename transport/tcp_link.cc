// TcpLink: one authenticated TCP connection, an I/O thread, a bounded inbox and outbox.
// Threading and liveness rules are in tcp_link.h; here: which thread touches what.
//   * mu_ guards inbox_, outbox_, writing_, read_paused_, closing_, closed_, failure_, rx_limits_,
//     seqs.
//   * Only the I/O thread touches sock_, the timers and the rx_/tx_ scratch members.
//   * The front of outbox_ stays in the deque while it is being written (its buffers are in
//     flight), so dropping queued frames always keeps it.
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "runtime/base/error.h"
#include "transport/frame.h"
#include "transport/tcp_socket.h"

namespace pipelm::transport {
namespace {

using asio::ip::tcp;
using detail::Clock;
using namespace std::chrono_literals;

struct OutFrame {
    wire::FrameKind kind;
    Message msg;
};

struct Failure {
    ErrorCode code;
    std::string message;
    bool drain_inbox_first;  // EOF: hand out what arrived before it; abort/protocol: preempt
};

class TcpLink final : public Link {
public:
    TcpLink(detail::TcpConn conn, const TcpOptions& options)
        : io_(std::move(conn.io)),
          sock_(std::move(*conn.socket)),
          hb_timer_(*io_),
          linger_timer_(*io_),
          opts_(options),
          name_(options.peer_label.empty() ? "tcp " + conn.remote
                                           : options.peer_label + " (tcp " + conn.remote + ")") {
        if (opts_.heartbeat_interval.count() <= 0)
            opts_.heartbeat_interval = std::max(opts_.peer_timeout / 4, std::chrono::milliseconds(5));
        if (opts_.max_queued == 0) opts_.max_queued = 1;
        rx_limits_ = opts_.receive_limits.value_or(opts_.limits);
        asio::error_code ec;
        sock_.set_option(tcp::no_delay(true), ec);
        last_rx_ns_ = detail::now_ns();
        io_->restart();  // the handshake ran this io_context until it had no work: stopped
        start_read();
        arm_heartbeat();
        thread_ = std::thread([this] { run_io(); });
    }

    ~TcpLink() override {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (!failure_) failure_ = Failure{ErrorCode::kCancelled, "link to " + name_ + " is closed", false};
            cv_.notify_all();
        }
        asio::post(*io_, [this] { begin_close(opts_.close_linger); });
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait_for(lock, opts_.close_linger + 1s, [this] { return closed_; });
        }
        io_->stop();
        thread_.join();
    }

    void send(Message msg) override {
        if (msg.kind == MsgKind::kAbort) {
            abort(msg.control);
            return;
        }
        const wire::FrameKind kind = wire::frame_kind(msg.kind);
        if (msg.control.size() > opts_.limits.max_control_bytes ||
            msg.payload.size() > opts_.limits.max_payload_bytes)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "message for ", name_, " has ", msg.control.size(),
                         " control and ", msg.payload.size(), " payload bytes, over the link limits of ",
                         opts_.limits.max_control_bytes, " and ", opts_.limits.max_payload_bytes);
        std::unique_lock<std::mutex> lock(mu_);
        wait_alive_locked(lock, [this] { return outbox_.size() < opts_.max_queued; });
        if (failure_) throw_failure_locked();
        outbox_.push_back(OutFrame{kind, std::move(msg)});
        ++enqueued_seq_;
        lock.unlock();
        asio::post(*io_, [this] { write_next(); });
    }

    Message recv(std::chrono::milliseconds timeout) override {
        const auto deadline = detail::deadline_after(timeout);
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            if (failure_ && !failure_->drain_inbox_first) throw_failure_locked();
            if (!inbox_.empty()) return pop_inbox_locked();
            if (failure_) throw_failure_locked();
            const auto now = Clock::now();
            if (stale_locked(now)) {
                fail_locked(ErrorCode::kPeerLost, stale_message());
                throw_failure_locked();
            }
            if (now >= deadline)
                PIPELM_THROW(ErrorCode::kTimeout, "no message from ", name_, " within ",
                             detail::format_seconds(timeout));
            cv_.wait_until(lock, std::min(deadline, stale_deadline_locked(now)));
        }
    }

    void abort(const std::string& reason) noexcept override {
        try {
            std::lock_guard<std::mutex> lock(mu_);
            if (failure_) {  // already failed: only stop handing out what arrived before
                failure_->drain_inbox_first = false;
                inbox_.clear();
                cv_.notify_all();
                return;
            }
            failure_ = Failure{ErrorCode::kCancelled, "link to " + name_ + " was aborted: " + reason, false};
            drop_queued_locked();
            outbox_.push_back(OutFrame{wire::FrameKind::kAbort, Message{MsgKind::kAbort, 0, reason, {}}});
            cv_.notify_all();
            asio::post(*io_, [this] {
                write_next();
                begin_close(std::min<std::chrono::milliseconds>(opts_.close_linger, 1s));
            });
        } catch (...) {
            // Only allocation can fail here; the link is then failed without telling the peer.
        }
    }

    void flush() override {
        std::unique_lock<std::mutex> lock(mu_);
        const uint64_t target = enqueued_seq_;
        wait_alive_locked(lock, [&] { return written_seq_ >= target; });
        if (written_seq_ < target) throw_failure_locked();
    }

    std::string peer_name() const override { return name_; }

    void set_receive_limits(const LinkLimits& limits) {
        std::lock_guard<std::mutex> lock(mu_);
        rx_limits_ = limits;
    }

    uint64_t bytes_sent() const override { return bytes_sent_; }
    uint64_t bytes_received() const override { return bytes_received_; }

private:
    // ---- caller side (mu_ held) ---------------------------------------------------------
    Message pop_inbox_locked() {
        Message m = std::move(inbox_.front());
        inbox_.pop_front();
        if (read_paused_ && inbox_.size() < opts_.max_queued && !closed_) {
            read_paused_ = false;
            last_rx_ns_ = detail::now_ns();  // we were not listening: the silence is ours
            asio::post(*io_, [this] { start_read(); });
        }
        return m;
    }

    [[noreturn]] void throw_failure_locked() { throw Error(failure_->code, failure_->message); }

    // Silence is only meaningful while the reader is running.
    bool stale_locked(Clock::time_point now) const {
        return !read_paused_ && !closed_ && now > stale_deadline_locked(now);
    }
    Clock::time_point stale_deadline_locked(Clock::time_point now) const {
        if (read_paused_ || closed_) return now + opts_.peer_timeout;
        return Clock::time_point(std::chrono::nanoseconds(last_rx_ns_.load())) + opts_.peer_timeout;
    }
    std::string stale_message() const {
        return "no data or heartbeat from " + name_ + " for " + detail::format_seconds(opts_.peer_timeout) +
               ": the peer is stuck or its host is unreachable";
    }

    // Waits until ready() or a failure; fails the link when the peer goes silent.
    template <typename Pred>
    void wait_alive_locked(std::unique_lock<std::mutex>& lock, Pred ready) {
        while (!ready() && !failure_) {
            const auto now = Clock::now();
            if (stale_locked(now)) {
                fail_locked(ErrorCode::kPeerLost, stale_message());
                return;
            }
            cv_.wait_until(lock, stale_deadline_locked(now));
        }
    }

    // First failure wins; wakes every waiter and closes the socket from the I/O thread.
    void fail_locked(ErrorCode code, std::string message, bool drain_inbox_first = false) {
        if (failure_) return;
        failure_ = Failure{code, std::move(message), drain_inbox_first};
        drop_queued_locked();
        cv_.notify_all();
        asio::post(*io_, [this] { close_socket(); });
    }

    void drop_queued_locked() {
        if (outbox_.empty()) return;
        outbox_.erase(outbox_.begin() + (writing_ ? 1 : 0), outbox_.end());
    }

    // ---- I/O thread -----------------------------------------------------------------------
    void run_io() {
        auto guard = asio::make_work_guard(*io_);
        for (;;) {
            try {
                io_->run();
                return;
            } catch (const std::exception& e) {  // handlers do not throw; keep the thread alive anyway
                std::lock_guard<std::mutex> lock(mu_);
                fail_locked(ErrorCode::kInternal, std::string("I/O thread of ") + name_ + ": " + e.what());
            }
        }
    }

    void start_read() {
        asio::async_read(sock_, asio::buffer(rx_hdr_), [this](const asio::error_code& ec, size_t) { on_header(ec); });
    }

    void on_header(const asio::error_code& ec) {
        if (ec) return on_read_error(ec);
        last_rx_ns_ = detail::now_ns();
        try {
            LinkLimits limits;
            {
                std::lock_guard<std::mutex> lock(mu_);
                limits = rx_limits_;
            }
            rx_frame_ = wire::decode_frame_header(rx_hdr_.data(), limits, name_);
        } catch (const Error& e) {
            std::lock_guard<std::mutex> lock(mu_);
            fail_locked(e.code(), e.what());
            return;
        }
        if (rx_frame_.kind == wire::FrameKind::kHeartbeat) return start_read();
        rx_msg_ = Message{};
        rx_msg_.tag = rx_frame_.tag;
        rx_control_got_ = 0;
        rx_payload_got_ = 0;
        read_body();
    }

    // Grows `buf` (which holds `got` received bytes of `total`) once it is full: 64 KiB first,
    // then doubling, so what is allocated stays within twice what the peer really sent.
    template <typename Buffer>
    static void grow(Buffer& buf, size_t got, uint64_t total) {
        if (got < buf.size()) return;
        constexpr size_t kFirstChunk = size_t(64) << 10;
        buf.resize(static_cast<size_t>(std::min<uint64_t>(total, std::max(kFirstChunk, buf.size() * 2))));
    }

    // Reads the control part, then the payload, in whatever pieces the socket delivers; every
    // piece keeps the peer alive in our eyes while a long payload trickles in.
    void read_body() {
        asio::mutable_buffer into;
        size_t* got = nullptr;
        try {
            if (rx_control_got_ < rx_frame_.control_bytes) {
                grow(rx_msg_.control, rx_control_got_, rx_frame_.control_bytes);
                into = asio::buffer(&rx_msg_.control[rx_control_got_], rx_msg_.control.size() - rx_control_got_);
                got = &rx_control_got_;
            } else if (rx_payload_got_ < rx_frame_.payload_bytes) {
                grow(rx_msg_.payload, rx_payload_got_, rx_frame_.payload_bytes);
                into = asio::buffer(rx_msg_.payload.data() + rx_payload_got_, rx_msg_.payload.size() - rx_payload_got_);
                got = &rx_payload_got_;
            } else {
                return on_body();
            }
        } catch (const std::bad_alloc&) {
            std::lock_guard<std::mutex> lock(mu_);
            fail_locked(ErrorCode::kOutOfMemory, ::pipelm::detail::concat("cannot allocate ", rx_frame_.payload_bytes,
                                                                          " bytes for a message from ", name_));
            return;
        }
        sock_.async_read_some(into, [this, got](const asio::error_code& ec, size_t n) {
            if (ec) return on_read_error(ec);
            last_rx_ns_ = detail::now_ns();
            *got += n;
            read_body();
        });
    }

    void on_body() {
        bytes_received_ += rx_msg_.control.size() + rx_msg_.payload.size();
        std::unique_lock<std::mutex> lock(mu_);
        if (rx_frame_.kind == wire::FrameKind::kAbort) {
            fail_locked(ErrorCode::kPeerLost, name_ + " aborted: " + rx_msg_.control);
            return;
        }
        if (rx_frame_.kind == wire::FrameKind::kClose) {
            fail_locked(ErrorCode::kPeerLost, name_ + " closed the link", true);
            return;
        }
        if (!closing_) {
            rx_msg_.kind = wire::message_kind(rx_frame_.kind);
            inbox_.push_back(std::move(rx_msg_));
            cv_.notify_all();
            if (inbox_.size() >= opts_.max_queued) {
                read_paused_ = true;  // back-pressure: TCP flow control stops the peer
                return;
            }
        }
        lock.unlock();
        start_read();
    }

    void on_read_error(const asio::error_code& ec) {
        if (ec == asio::error::operation_aborted) return;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (!closing_) {  // while closing, the peer's EOF (or any error) just ends the wait
                std::string msg;
                if (ec == asio::error::eof)
                    msg = name_ + " closed the connection";
                else if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe)
                    msg = "connection to " + name_ + " was reset (the peer process exited or crashed)";
                else
                    msg = "receiving from " + name_ + " failed: " + ec.message();
                fail_locked(ErrorCode::kPeerLost, msg, /*drain_inbox_first=*/true);
            }
        }
        close_socket();
    }

    void write_next() {
        std::unique_lock<std::mutex> lock(mu_);
        if (writing_ || outbox_.empty() || closed_ || half_closed_) return;
        OutFrame& f = outbox_.front();
        writing_ = true;
        wire::FrameHeader h;
        h.kind = f.kind;
        h.tag = f.msg.tag;
        h.control_bytes = static_cast<uint32_t>(f.msg.control.size());
        h.payload_bytes = f.msg.payload.size();
        wire::encode_frame_header(h, tx_hdr_.data());
        std::array<asio::const_buffer, 3> bufs{asio::buffer(tx_hdr_), asio::buffer(f.msg.control),
                                              asio::buffer(f.msg.payload)};
        lock.unlock();
        asio::async_write(sock_, bufs, [this](const asio::error_code& ec, size_t) { on_written(ec); });
    }

    void on_written(const asio::error_code& ec) {
        std::unique_lock<std::mutex> lock(mu_);
        writing_ = false;
        if (ec) {
            if (ec != asio::error::operation_aborted)
                fail_locked(ErrorCode::kPeerLost, "sending to " + name_ + " failed: " + ec.message() +
                                                      " (the peer process exited or the network failed)");
            drop_queued_locked();
            cv_.notify_all();
            lock.unlock();
            close_socket();
            return;
        }
        OutFrame& f = outbox_.front();
        if (f.kind == wire::FrameKind::kData || f.kind == wire::FrameKind::kShutdown) {
            bytes_sent_ += f.msg.control.size() + f.msg.payload.size();
            ++written_seq_;
        }
        outbox_.pop_front();
        cv_.notify_all();
        const bool close_now = closing_ && outbox_.empty();
        lock.unlock();
        if (close_now)
            half_close();
        else
            write_next();
    }

    void arm_heartbeat() {
        hb_timer_.expires_after(opts_.heartbeat_interval);
        hb_timer_.async_wait([this](const asio::error_code& ec) {
            if (ec) return;
            {
                std::lock_guard<std::mutex> lock(mu_);
                if (failure_ || closed_) return;
                if (outbox_.empty() && !writing_) outbox_.push_back(OutFrame{wire::FrameKind::kHeartbeat, {}});
            }
            write_next();
            arm_heartbeat();
        });
    }

    // Sends what is queued (bounded by `linger`), then half-closes and waits for the peer's EOF.
    void begin_close(std::chrono::milliseconds linger) {
        std::unique_lock<std::mutex> lock(mu_);
        if (closing_ || closed_) return;
        closing_ = true;
        const bool resume_read = read_paused_;
        read_paused_ = false;
        const bool drained = outbox_.empty() && !writing_;
        lock.unlock();
        hb_timer_.cancel();
        linger_timer_.expires_after(linger);
        linger_timer_.async_wait([this](const asio::error_code& ec) {
            if (!ec) close_socket();
        });
        if (resume_read) start_read();  // discard whatever comes until the peer's EOF
        if (drained) half_close();
    }

    void half_close() {
        if (half_closed_) return;
        half_closed_ = true;
        asio::error_code ec;
        sock_.shutdown(tcp::socket::shutdown_send, ec);
        if (ec) close_socket();
    }

    void close_socket() {
        asio::error_code ec;
        hb_timer_.cancel();
        linger_timer_.cancel();
        sock_.shutdown(tcp::socket::shutdown_both, ec);
        sock_.close(ec);
        std::lock_guard<std::mutex> lock(mu_);
        closed_ = true;
        cv_.notify_all();
    }

    std::unique_ptr<asio::io_context> io_;
    tcp::socket sock_;
    asio::steady_timer hb_timer_;
    asio::steady_timer linger_timer_;
    TcpOptions opts_;
    const std::string name_;
    std::thread thread_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Message> inbox_;
    std::deque<OutFrame> outbox_;
    bool writing_ = false;
    bool read_paused_ = false;
    bool closing_ = false;
    bool closed_ = false;
    std::optional<Failure> failure_;
    LinkLimits rx_limits_;  // what the peer may send us (set_receive_limits may change it)
    uint64_t enqueued_seq_ = 0;
    uint64_t written_seq_ = 0;

    bool half_closed_ = false;  // I/O thread only (read under mu_ in write_next by the same thread)
    std::array<uint8_t, wire::kFrameHeaderBytes> rx_hdr_{};
    wire::FrameHeader rx_frame_;
    Message rx_msg_;
    size_t rx_control_got_ = 0;  // bytes of rx_msg_.control / .payload received so far
    size_t rx_payload_got_ = 0;
    std::array<uint8_t, wire::kFrameHeaderBytes> tx_hdr_{};

    std::atomic<int64_t> last_rx_ns_{0};
    std::atomic<uint64_t> bytes_sent_{0};
    std::atomic<uint64_t> bytes_received_{0};
};

}  // namespace

namespace detail {

std::shared_ptr<Link> make_tcp_link(TcpConn conn, const TcpOptions& options) {
    return std::make_shared<TcpLink>(std::move(conn), options);
}

void set_receive_limits(Link& link, const LinkLimits& limits) {
    if (auto* tcp = dynamic_cast<TcpLink*>(&link)) tcp->set_receive_limits(limits);
}

std::string endpoint_string(const asio::ip::tcp::endpoint& ep) {
    const auto addr = ep.address();
    if (addr.is_v6()) return "[" + addr.to_string() + "]:" + std::to_string(ep.port());
    return addr.to_string() + ":" + std::to_string(ep.port());
}

}  // namespace detail
}  // namespace pipelm::transport
