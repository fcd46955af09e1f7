// TCP links (standalone Asio): a listener that authenticates peers with a shared token, a
// connector with back-off, and the Link over one authenticated connection.
//
// Wire format: after the greeting (a mutual HMAC challenge-response over the token, which never
// crosses the network: auth.h, frame.h) each message is one frame: 24-byte little-endian header
// (magic "PLM1", version, kind, tag, control bytes, payload bytes) + control + payload. Lengths
// are checked against LinkLimits before anything is allocated, and the body is allocated as its
// bytes arrive (a peer that announces 2 GiB and sends 10 bytes costs 10 bytes); a violation
// fails the link with kProtocol and closes it.
//
// Threading: each link owns an io_context and one I/O thread that reads frames into a bounded
// inbox (reading pauses while it holds `max_queued` messages), writes the bounded outbox in
// order (send() returns once queued; gather writes, TCP_NODELAY) and sends a heartbeat frame
// every `heartbeat_interval` when idle. Callers block on a condition variable only.
//
// Liveness: a waiter in recv/flush/send that hears nothing (no data, no heartbeat) from the
// peer for `peer_timeout` fails the link with kPeerLost; FIN/RST (a killed process on the same
// kernel) and write errors fail it at once. Messages fully received before an EOF are still
// delivered; a peer's abort frame preempts them.
//
// Close: the destructor sends what is queued (up to `close_linger`), half-closes, waits for the
// peer's EOF (same bound) and joins the I/O thread. Call flush() to be sure data has left.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "transport/link.h"

namespace pipelm::transport {

struct TcpOptions {
    std::chrono::milliseconds peer_timeout{10000};      // silence that means the peer is gone
    std::chrono::milliseconds heartbeat_interval{0};    // 0: peer_timeout / 4
    std::chrono::milliseconds handshake_timeout{5000};  // listener: per connection greeting
    size_t max_greetings = 64;  // listener: connections greeting at once; a new one drops the oldest
    std::chrono::milliseconds close_linger{2000};       // destructor: bound on draining + EOF wait
    size_t max_queued = 64;                             // inbox and outbox bound, in messages
    LinkLimits limits;  // what this side sends and, unless receive_limits is set, accepts
    // What this side accepts from the peer when it should be less than `limits` (a worker before
    // it knows its job; a coordinator that knows the largest result its plan allows).
    std::optional<LinkLimits> receive_limits;
    std::string peer_label;  // e.g. "stage 2": peer_name() becomes "stage 2 (tcp 10.0.0.2:7000)"
};

struct HostPort {
    std::string host;  // without brackets for IPv6
    uint16_t port = 0;
};

// "host:port" or "[v6addr]:port". Throws Error{kInvalidArgument} with an example otherwise.
HostPort parse_host_port(const std::string& host_port);

class TcpListener {
public:
    // Binds and listens on `host_port` (port 0: any free port, see port()). Errors are
    // Error{kIo}: "address 127.0.0.1:7000 is in use: pick another --listen port or stop the
    // process that holds it", or the reason the address cannot be bound.
    static std::unique_ptr<TcpListener> bind(const std::string& host_port, std::string token,
                                             TcpOptions options = {});
    ~TcpListener();
    TcpListener(const TcpListener&) = delete;
    TcpListener& operator=(const TcpListener&) = delete;

    uint16_t port() const;
    std::string address() const;  // "127.0.0.1:40123"
    const std::string& token() const;
    const TcpOptions& options() const;

    // Waits for the next peer that proves it knows the token and speaks our protocol version.
    // Greetings run concurrently, each bounded by options().handshake_timeout; at most
    // options().max_greetings at once (a new connection drops the oldest). Peers that fail or
    // are dropped are closed with a PIPELM_WARN naming their address, and the wait goes on.
    // Greetings progress only while a thread is in accept(); a peer admitted while no link was
    // asked for is handed out by the next call. Throws Error{kTimeout} when `timeout` passes
    // first. `peer_label` overrides options().peer_label for this link.
    std::shared_ptr<Link> accept(std::chrono::milliseconds timeout, const std::string& peer_label = {});

    struct Impl;

private:
    explicit TcpListener(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Connects to a listener, retrying refused/unreachable attempts with back-off (100 ms doubling
// to 2 s) until `connect_timeout`, then authenticates (both sides prove they know the token).
// Errors:
//   kTimeout: "could not reach worker H:P within N s: start `pipelm worker --listen H:P` there
//             or check the address (last error: ...)"
//   kInvalidArgument: "worker H:P refused the token (check --token-file)", or the worker could
//             not prove that it knows the token
//   kProtocol: the worker runs another protocol version.
std::shared_ptr<Link> tcp_connect(const std::string& host_port, const std::string& token,
                                  std::chrono::milliseconds connect_timeout,
                                  const TcpOptions& options = {});

// Reads a shared token: surrounding whitespace trimmed. Error{kIo} if unreadable or not a
// regular file, Error{kInvalidArgument} if empty, longer than 4096 bytes, or readable or
// writable by group or others (mode & 077: "chmod 600 FILE", as ssh does for keys).
std::string read_token_file(const std::string& path);

}  // namespace pipelm::transport
