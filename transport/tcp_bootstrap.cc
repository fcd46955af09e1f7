// TCP bootstrap: Assign / Hello / Ready / Start over freshly authenticated links (see
// tcp_bootstrap.h for the wiring and the message layout).
#include "transport/tcp_bootstrap.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>

#include "runtime/base/error.h"
#include "runtime/base/log.h"
#include "transport/frame.h"
#include "transport/tcp_socket.h"
#include "transport/wait_util.h"

namespace pipelm::transport {
namespace {

using detail::Clock;

constexpr uint32_t kTagAssign = 0x504C4201;
constexpr uint32_t kTagHello = 0x504C4202;
constexpr uint32_t kTagReady = 0x504C4203;
constexpr uint32_t kTagStart = 0x504C4204;

constexpr std::chrono::milliseconds kAssignWait = std::chrono::minutes(10);
constexpr int32_t kMaxStages = 1 << 16;

struct Assign {
    uint64_t session = 0;
    int32_t stage = 0;
    int32_t n_stages = 0;
    uint32_t timeout_ms = 0;
    std::string next_address;
    std::string job;
};

Message make_message(uint32_t tag, std::string control) {
    Message m;
    m.tag = tag;
    m.control = std::move(control);
    return m;
}

std::string encode_assign(const Assign& a) {
    wire::ByteWriter w;
    w.u64(a.session);
    w.i32(a.stage);
    w.i32(a.n_stages);
    w.u32(a.timeout_ms);
    w.str(a.next_address);
    w.str(a.job);
    return w.take();
}

Assign decode_assign(const std::string& bytes) {
    wire::ByteReader r(bytes, "bootstrap Assign message");
    Assign a;
    a.session = r.u64();
    a.stage = r.i32();
    a.n_stages = r.i32();
    a.timeout_ms = r.u32();
    a.next_address = r.str();
    a.job = r.str();
    r.expect_end();
    return a;
}

// Hello, Ready and Start: session + stage.
std::string encode_stage_msg(uint64_t session, int stage) {
    wire::ByteWriter w;
    w.u64(session);
    w.i32(stage);
    return w.take();
}

// Receives a message with `tag` for this `session` and returns its stage field.
int expect_stage_msg(Link& link, uint32_t tag, const char* what, uint64_t session, std::chrono::milliseconds timeout) {
    Message m = link.recv(timeout);
    if (m.kind != MsgKind::kData || m.tag != tag)
        PIPELM_THROW(ErrorCode::kProtocol, "bootstrap: expected ", what, " from ", link.peer_name(), ", got tag 0x",
                     std::hex, m.tag);
    wire::ByteReader r(m.control, std::string("bootstrap ") + what + " message");
    const uint64_t s = r.u64();
    const int stage = r.i32();
    r.expect_end();
    if (s != session)
        PIPELM_THROW(ErrorCode::kProtocol, "bootstrap: ", link.peer_name(), " answered for another job");
    return stage;
}

std::chrono::milliseconds remaining(Clock::time_point deadline) {
    return std::max(std::chrono::milliseconds(0),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

void abort_all(const std::vector<std::shared_ptr<Link>>& links, const std::string& reason) {
    for (const auto& l : links)
        if (l) l->abort(reason);
}

uint64_t new_session_id() {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ rd() ^ uint64_t(detail::now_ns());
}

std::string stage_label(int stage) { return ::pipelm::detail::concat("stage ", stage); }

}  // namespace

CoordinatorSession tcp_coordinator_connect(const std::vector<std::string>& workers, const std::string& token,
                                           std::chrono::milliseconds connect_timeout,
                                           const std::function<std::string(int stage)>& job_for_stage,
                                           const TcpOptions& options) {
    PIPELM_CHECK(!workers.empty(), "tcp_coordinator_connect: give at least one worker address");
    const int n = static_cast<int>(workers.size());
    std::vector<std::shared_ptr<Link>> connected(workers.size());
    try {
        const auto connect_deadline = detail::deadline_after(connect_timeout);
        for (int i = 0; i < n; ++i) {
            TcpOptions opts = options;
            opts.peer_label = stage_label(i + 1);
            connected[i] = tcp_connect(workers[i], token, remaining(connect_deadline), opts);
        }
    } catch (const std::exception& e) {
        abort_all(connected, std::string("coordinator: pipeline set-up failed: ") + e.what());
        throw;
    }
    return tcp_coordinator_wire(std::move(connected), workers, connect_timeout, job_for_stage);
}

CoordinatorSession tcp_coordinator_wire(std::vector<std::shared_ptr<Link>> connected,
                                        const std::vector<std::string>& workers,
                                        std::chrono::milliseconds timeout,
                                        const std::function<std::string(int stage)>& job_for_stage) {
    PIPELM_CHECK(!workers.empty() && connected.size() == workers.size(),
                 "tcp_coordinator_wire: one connected link per worker address");
    const int n = static_cast<int>(workers.size());
    const uint64_t session = new_session_id();
    CoordinatorSession out;
    out.workers = std::move(connected);
    try {
        for (int i = 0; i < n; ++i) {
            Assign a;
            a.session = session;
            a.stage = i + 1;
            a.n_stages = n + 1;
            a.timeout_ms = static_cast<uint32_t>(std::min<int64_t>(timeout.count(), UINT32_MAX));
            a.next_address = i + 1 < n ? workers[i + 1] : std::string();
            a.job = job_for_stage(i + 1);
            out.workers[i]->send(make_message(kTagAssign, encode_assign(a)));
        }
        const auto wire_deadline = detail::deadline_after(timeout);
        for (int i = 0; i < n; ++i) {
            const int stage = expect_stage_msg(*out.workers[i], kTagReady, "Ready", session, remaining(wire_deadline));
            if (stage != i + 1)
                PIPELM_THROW(ErrorCode::kProtocol, "bootstrap: ", out.workers[i]->peer_name(),
                             " reports stage ", stage);
        }
        for (int i = 0; i < n; ++i) out.workers[i]->send(make_message(kTagStart, encode_stage_msg(session, 0)));
    } catch (const std::exception& e) {
        abort_all(out.workers, std::string("coordinator: pipeline set-up failed: ") + e.what());
        throw;
    }
    out.links.next = out.workers.front();
    out.links.ring = out.workers.back();
    return out;
}

namespace {

// One connection attempt to `ai` bounded by `wait`: 1 connected, 0 refused or failed, -1 no answer.
int try_connect(const addrinfo* ai, std::chrono::milliseconds wait) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) return 0;
    int result = ::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 1 : 0;
    if (result == 0 && errno == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(wait.count()));
        int err = 0;
        socklen_t len = sizeof err;
        if (ready == 0) result = -1;
        else if (ready == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) result = 1;
    }
    ::close(fd);
    return result;
}

}  // namespace

bool tcp_nobody_listens(const std::string& host_port, std::chrono::milliseconds timeout) {
    const HostPort hp = parse_host_port(host_port);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(hp.host.c_str(), std::to_string(hp.port).c_str(), &hints, &res) != 0 || !res) return true;
    // Short attempts until `timeout`: a process dying while we connect may drop our SYN (the next
    // attempt is refused at once), where one long attempt would wait for the SYN's retransmission.
    const auto deadline = detail::deadline_after(timeout);
    int answer = -1;
    while (answer == -1 && Clock::now() < deadline) {
        answer = 0;
        for (const addrinfo* ai = res; ai && answer != 1; ai = ai->ai_next) {
            const int r = try_connect(ai, std::min(std::chrono::milliseconds(100), remaining(deadline)));
            if (r != 0) answer = r;
        }
    }
    ::freeaddrinfo(res);
    return answer != 1;
}

namespace {

// Accepts connections until one is stage `expected` of this session; others are dropped.
std::shared_ptr<Link> accept_prev(TcpListener& listener, uint64_t session, int expected, Clock::time_point deadline) {
    for (;;) {
        std::shared_ptr<Link> link = listener.accept(remaining(deadline), stage_label(expected));
        try {
            if (expect_stage_msg(*link, kTagHello, "Hello", session, remaining(deadline)) == expected) return link;
            PIPELM_WARN("bootstrap: ignored a connection from ", link->peer_name(), ": wrong stage");
        } catch (const Error& e) {
            if (e.code() == ErrorCode::kTimeout && Clock::now() >= deadline) throw;
            PIPELM_WARN("bootstrap: ignored a connection from ", link->peer_name(), ": ", e.what());
        }
        link->abort("not the expected predecessor of this stage");
    }
}

}  // namespace

WorkerSession tcp_worker_accept(TcpListener& listener, std::chrono::milliseconds timeout,
                                const JobLimits& limits_for_job) {
    WorkerSession ws;
    ws.control = listener.accept(timeout, "stage 0 (coordinator)");
    std::shared_ptr<Link> next, prev;
    try {
        // The coordinator connects to every worker before it sends any Assign; its heartbeats
        // (or its EOF/abort) tell us it is still there, so this wait need not be short.
        Message m = ws.control->recv(std::max<std::chrono::milliseconds>(timeout, kAssignWait));
        if (m.kind != MsgKind::kData || m.tag != kTagAssign)
            PIPELM_THROW(ErrorCode::kProtocol, "bootstrap: expected an Assign from ", ws.control->peer_name());
        const Assign a = decode_assign(m.control);
        if (a.n_stages < 2 || a.n_stages > kMaxStages || a.stage < 1 || a.stage >= a.n_stages)
            PIPELM_THROW(ErrorCode::kProtocol, "bootstrap: Assign for stage ", a.stage, " of ", a.n_stages);
        const bool last = a.stage == a.n_stages - 1;
        if (!last && a.next_address.empty())
            PIPELM_THROW(ErrorCode::kProtocol, "bootstrap: stage ", a.stage, " was given no successor address");
        ws.job = TcpJob{a.stage, a.n_stages, a.job};
        const TcpOptions& lo = listener.options();
        const LinkLimits job_limits = limits_for_job ? limits_for_job(ws.job) : lo.receive_limits.value_or(lo.limits);
        const std::chrono::milliseconds budget(a.timeout_ms);
        const auto deadline = detail::deadline_after(budget);
        if (!last) {
            TcpOptions opts = listener.options();
            opts.peer_label = stage_label(a.stage + 1);
            next = tcp_connect(a.next_address, listener.token(), remaining(deadline), opts);
            next->send(make_message(kTagHello, encode_stage_msg(a.session, a.stage)));
        }
        prev = a.stage == 1 ? ws.control : accept_prev(listener, a.session, a.stage - 1, deadline);
        // Nobody sends pipeline traffic before every worker is Ready: the job's limits hold for all of it.
        for (const auto& l : {ws.control, next, prev})
            if (l) detail::set_receive_limits(*l, job_limits);
        ws.control->send(make_message(kTagReady, encode_stage_msg(a.session, a.stage)));
        expect_stage_msg(*ws.control, kTagStart, "Start", a.session, budget + budget);
        ws.links.prev = prev;
        ws.links.next = next;
        ws.links.ring = last ? ws.control : nullptr;
    } catch (const std::exception& e) {
        const std::string who = ws.job.stage > 0 ? stage_label(ws.job.stage) : std::string("worker");
        abort_all({ws.control, next, prev}, who + " set-up failed: " + e.what());
        // kTimeout means "no coordinator came"; a coordinator did come, so a timeout while
        // wiring is a peer that did not show up.
        const auto* err = dynamic_cast<const Error*>(&e);
        if (err && err->code() == ErrorCode::kTimeout) throw Error(ErrorCode::kPeerLost, err->what());
        throw;
    }
    return ws;
}

}  // namespace pipelm::transport
