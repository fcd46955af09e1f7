// Internal to transport/: the hand-over between the TCP handshake code (tcp_listener.cc) and
// the TcpLink (tcp_link.cc), plus a helper that runs an io_context until an operation finishes
// or a deadline passes. Not installed for other folders: they see only tcp_link.h.
#pragma once
#include <asio.hpp>
#include <functional>
#include <memory>
#include <string>

#include "transport/tcp_link.h"
#include "transport/wait_util.h"

namespace pipelm::transport::detail {

// A connected, authenticated socket and the io_context it belongs to.
struct TcpConn {
    std::unique_ptr<asio::io_context> io;
    std::unique_ptr<asio::ip::tcp::socket> socket;
    std::string remote;  // "127.0.0.1:7000" as given or as seen
};

// Starts the link's I/O thread. peer_name() = "<label> (tcp <remote>)" or "tcp <remote>".
std::shared_ptr<Link> make_tcp_link(TcpConn conn, const TcpOptions& options);

// Replaces the limits a TCP link enforces on what it receives, from the next frame header it
// reads on (no-op for other links). Call it before the peer may send frames the new limits
// are meant for (the bootstrap does it before its Ready).
void set_receive_limits(Link& link, const LinkLimits& limits);

std::string endpoint_string(const asio::ip::tcp::endpoint& ep);

// Runs `io` (not otherwise run by any thread) until `done` becomes true or `deadline` passes;
// on the deadline calls `cancel` and runs until the cancelled handler has set `done`.
// Returns false when the deadline hit first.
inline bool run_until(asio::io_context& io, const bool& done, Clock::time_point deadline,
                      const std::function<void()>& cancel) {
    io.restart();
    while (!done && Clock::now() < deadline) io.run_one_until(deadline);
    if (done) return true;
    cancel();
    io.restart();
    while (!done) io.run_one();
    return false;
}

}  // namespace pipelm::transport::detail
