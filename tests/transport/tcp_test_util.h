// Helpers for the TCP tests: a connected pair over 127.0.0.1 and a raw socket client that
// speaks (or breaks) the wire format by hand.
#pragma once
#include <gtest/gtest.h>
#include <poll.h>

#include <asio.hpp>
#include <array>
#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "transport/auth.h"
#include "transport/frame.h"
#include "transport/tcp_link.h"

namespace pipelm::transport::testing {

inline const char* kToken = "test-token-0123456789";

// {client end, server end} over 127.0.0.1 with `options` on both sides.
inline std::pair<std::shared_ptr<Link>, std::shared_ptr<Link>> tcp_pair(const TcpOptions& options = {}) {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken, options);
    std::shared_ptr<Link> server;
    std::exception_ptr error;
    std::thread acceptor([&] {
        try {
            server = listener->accept(std::chrono::seconds(10), "server");
        } catch (...) {
            error = std::current_exception();
        }
    });
    TcpOptions client_options = options;
    client_options.peer_label = "client";
    std::shared_ptr<Link> client;
    try {
        client = tcp_connect(listener->address(), kToken, std::chrono::seconds(10), client_options);
    } catch (...) {
        acceptor.join();
        throw;
    }
    acceptor.join();
    if (error) std::rethrow_exception(error);
    return {client, server};
}

// A plain blocking socket to 127.0.0.1:port.
class RawClient {
public:
    explicit RawClient(uint16_t port) {
        sock_.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    }
    void write(const std::vector<uint8_t>& bytes) { asio::write(sock_, asio::buffer(bytes)); }
    template <size_t N>
    void write(const std::array<uint8_t, N>& bytes) {
        asio::write(sock_, asio::buffer(bytes));
    }
    // Reads exactly `n` bytes; false on EOF/error or when they do not all arrive within `timeout`.
    bool read_exact(uint8_t* out, size_t n, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        size_t got = 0;
        while (got < n) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{sock_.native_handle(), POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
            asio::error_code ec;
            const size_t k = sock_.read_some(asio::buffer(out + got, n - got), ec);
            if (ec || k == 0) return false;
            got += k;
        }
        return true;
    }
    // Reads one byte; -1 on EOF/error or when nothing arrives within `timeout`.
    int read_byte(std::chrono::milliseconds timeout) {
        pollfd p{sock_.native_handle(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return -1;
        uint8_t b = 0;
        asio::error_code ec;
        const size_t n = sock_.read_some(asio::buffer(&b, 1), ec);
        return ec || n == 0 ? -1 : b;
    }
    // True when the peer closed the connection within `timeout` (data before the EOF is skipped).
    bool closed_by_peer(std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{sock_.native_handle(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            uint8_t buf[256];
            asio::error_code ec;
            sock_.read_some(asio::buffer(buf), ec);
            if (ec) return true;
        }
        return false;
    }

    asio::ip::tcp::socket& socket() { return sock_; }

private:
    asio::io_context io_;
    asio::ip::tcp::socket sock_{io_};
};

// Plays the client's side of the greeting (transport/auth.h) by hand on `raw`: true when the
// listener accepted `token` and proved that it knows it too.
inline bool raw_authenticate(RawClient& raw, const std::string& token) {
    using namespace std::chrono_literals;
    const auth::Nonce nc = auth::random_nonce();
    raw.write(wire::encode_client_hello(nc));
    uint8_t challenge[1 + auth::kNonceBytes];
    if (!raw.read_exact(challenge, sizeof challenge, 5s) || challenge[0] != uint8_t(wire::AuthReply::kChallenge)) return false;
    auth::Nonce ns;
    std::memcpy(ns.data(), challenge + 1, ns.size());
    const auth::Proof mine = auth::proof(token, auth::Role::kClient, nc, ns);
    raw.write(std::vector<uint8_t>(mine.begin(), mine.end()));
    uint8_t verdict[1 + auth::kProofBytes];
    if (!raw.read_exact(verdict, sizeof verdict, 5s) || verdict[0] != uint8_t(wire::AuthReply::kAccepted)) return false;
    auth::Proof theirs;
    std::memcpy(theirs.data(), verdict + 1, theirs.size());
    if (!auth::proofs_equal(theirs, auth::proof(token, auth::Role::kListener, nc, ns))) return false;
    raw.write(std::vector<uint8_t>{uint8_t(wire::AuthReply::kAccepted)});
    return true;
}

// A frame header as a peer would send it (kind, control and payload lengths as given).
inline std::vector<uint8_t> frame_header(wire::FrameKind kind, uint32_t control, uint64_t payload) {
    wire::FrameHeader h;
    h.kind = kind;
    h.control_bytes = control;
    h.payload_bytes = payload;
    std::vector<uint8_t> b(wire::kFrameHeaderBytes);
    wire::encode_frame_header(h, b.data());
    return b;
}

// An accepted server-side link whose client is a raw socket that already passed the greeting.
struct RawPeer {
    std::unique_ptr<TcpListener> listener;
    std::unique_ptr<RawClient> raw;
    std::shared_ptr<Link> link;
};

inline RawPeer raw_peer(const TcpOptions& options = {}) {
    using namespace std::chrono_literals;
    RawPeer p;
    p.listener = TcpListener::bind("127.0.0.1:0", kToken, options);
    std::thread acceptor([&] { p.link = p.listener->accept(10s, "raw peer"); });
    p.raw = std::make_unique<RawClient>(p.listener->port());
    EXPECT_TRUE(raw_authenticate(*p.raw, kToken));
    acceptor.join();
    return p;
}

}  // namespace pipelm::transport::testing
