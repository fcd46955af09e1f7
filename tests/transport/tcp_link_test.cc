// TCP links over 127.0.0.1: the conformance suite, authentication, addresses, limits and
// heartbeats.
#include <gtest/gtest.h>

#include <thread>

#include "runtime/base/error.h"
#include "tests/transport/link_conformance.h"
#include "tests/transport/tcp_test_util.h"
#include "transport/frame.h"

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct TcpPair {
    static std::pair<LinkPtr, LinkPtr> make() { return tcp_pair(); }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Tcp, LinkConformance, ::testing::Types<TcpPair>);

Message text(uint32_t tag, std::string s) {
    Message m;
    m.tag = tag;
    m.control = std::move(s);
    return m;
}

// Runs f, returns the Error it throws (fails the test if none).
template <typename F>
Error error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e;
    }
    ADD_FAILURE() << "no error thrown";
    return Error(ErrorCode::kInternal, "none");
}

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

TEST(TcpLink, PeerNamesCarryLabelAndAddress) {
    auto [client, server] = tcp_pair();
    EXPECT_TRUE(contains(client->peer_name(), "client (tcp 127.0.0.1:")) << client->peer_name();
    EXPECT_TRUE(contains(server->peer_name(), "server (tcp 127.0.0.1:")) << server->peer_name();
}

TEST(TcpLink, WrongTokenIsRefusedAndTheListenerKeepsServing) {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken);
    LinkPtr accepted;
    std::thread acceptor([&] { accepted = listener->accept(10s); });
    const Error e = error_of([&] { tcp_connect(listener->address(), "wrong-token", 5s); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()),
              "worker " + listener->address() + " refused the token (check --token-file)");
    // A greeting of another protocol version is refused with a reply that says so.
    {
        RawClient raw(listener->port());
        raw.write(wire::encode_client_hello(auth::random_nonce(), wire::kProtocolVersion + 1));
        EXPECT_EQ(raw.read_byte(5s), int(wire::AuthReply::kBadVersion));
    }
    // Not a pipelm peer at all.
    {
        RawClient raw(listener->port());
        raw.write(std::vector<uint8_t>(wire::kClientHelloBytes, 'G'));
        EXPECT_TRUE(raw.closed_by_peer(5s));
    }
    LinkPtr client = tcp_connect(listener->address(), kToken, 5s);
    acceptor.join();
    ASSERT_TRUE(accepted);
    client->send(text(5, "after the refusals"));
    EXPECT_EQ(accepted->recv(5s).control, "after the refusals");
}

TEST(TcpLink, SilentConnectionDoesNotBlockTheListenerForever) {
    TcpOptions opts;
    opts.handshake_timeout = 300ms;
    auto listener = TcpListener::bind("127.0.0.1:0", kToken, opts);
    LinkPtr accepted;
    std::thread acceptor([&] { accepted = listener->accept(10s); });
    RawClient silent(listener->port());
    std::this_thread::sleep_for(50ms);
    const auto t0 = Clock::now();
    LinkPtr client = tcp_connect(listener->address(), kToken, 5s);
    acceptor.join();
    EXPECT_TRUE(accepted);
    EXPECT_LT(Clock::now() - t0, 3s);
    // Greetings progress while the listener accepts: the silent peer is dropped at its deadline.
    EXPECT_EQ(error_of([&] { listener->accept(1s); }).code(), ErrorCode::kTimeout);
    EXPECT_TRUE(silent.closed_by_peer(1s));
}

TEST(TcpLink, PortInUseIsAnIoErrorWithAFix) {
    auto first = TcpListener::bind("127.0.0.1:0", kToken);
    const std::string addr = "127.0.0.1:" + std::to_string(first->port());
    const Error e = error_of([&] { TcpListener::bind(addr, kToken); });
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_EQ(std::string(e.what()),
              "address " + addr + " is in use: pick another --listen port or stop the process that holds it");
}

TEST(TcpLink, BadListenAddresses) {
    EXPECT_EQ(error_of([] { TcpListener::bind("192.0.2.1:0", kToken); }).code(), ErrorCode::kIo);
    EXPECT_EQ(error_of([] { TcpListener::bind("127.0.0.1", kToken); }).code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(error_of([] { TcpListener::bind("127.0.0.1:0", ""); }).code(), ErrorCode::kInvalidArgument);
}

TEST(TcpLink, ConnectToADeadPortFailsWithinTheTimeout) {
    uint16_t port = 0;
    {
        auto l = TcpListener::bind("127.0.0.1:0", kToken);
        port = l->port();
    }
    const std::string addr = "127.0.0.1:" + std::to_string(port);
    const auto t0 = Clock::now();
    const Error e = error_of([&] { tcp_connect(addr, kToken, 1s); });
    const auto took = Clock::now() - t0;
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 2500ms);
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
    EXPECT_TRUE(contains(e.what(), "could not reach worker " + addr + " within 1 s: start `pipelm worker --listen " +
                                       addr + "` there or check the address"))
        << e.what();
}

TEST(TcpLink, ConnectRetriesUntilTheWorkerStartsListening) {
    uint16_t port = 0;
    {
        auto l = TcpListener::bind("127.0.0.1:0", kToken);
        port = l->port();
    }
    const std::string addr = "127.0.0.1:" + std::to_string(port);
    LinkPtr server;
    std::thread late_worker([&] {
        std::this_thread::sleep_for(400ms);
        auto l = TcpListener::bind(addr, kToken);
        server = l->accept(5s);
    });
    LinkPtr client = tcp_connect(addr, kToken, 5s);
    late_worker.join();
    ASSERT_TRUE(server);
    client->send(text(1, "late"));
    EXPECT_EQ(server->recv(5s).control, "late");
}

TEST(TcpLink, SendOverTheLimitsIsRefusedLocally) {
    TcpOptions opts;
    opts.limits.max_payload_bytes = 1000;
    opts.limits.max_control_bytes = 10;
    auto [client, server] = tcp_pair(opts);
    Message m = text(1, "");
    m.payload.resize(1001);
    EXPECT_EQ(error_of([&, c = client] { c->send(m); }).code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(error_of([&, c = client] { c->send(text(1, std::string(11, 'x'))); }).code(),
              ErrorCode::kInvalidArgument);
    client->send(text(2, "fits"));
    EXPECT_EQ(server->recv(5s).control, "fits");
}

TEST(TcpLink, HeartbeatsKeepAnIdleLinkAlive) {
    TcpOptions opts;
    opts.peer_timeout = 600ms;  // heartbeats every 150 ms
    auto [client, server] = tcp_pair(opts);
    const Error e = error_of([&, s = server] { s->recv(1500ms); });
    EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
    client->send(text(3, "still here"));
    EXPECT_EQ(server->recv(5s).control, "still here");
}

TEST(TcpLink, BackPressureWhenTheReceiverDoesNotRead) {
    TcpOptions opts;
    opts.max_queued = 4;
    auto [client, server] = tcp_pair(opts);
    // 64 x 1 MiB: far more than the inbox, outbox and socket buffers hold together.
    std::thread sender([c = client] {
        try {
            for (uint32_t i = 0; i < 64; ++i) {
                Message m = text(i, "bulk");
                m.payload.assign(size_t(1) << 20, static_cast<uint8_t>(i));
                c->send(std::move(m));
            }
            c->flush();
        } catch (const Error& e) {
            ADD_FAILURE() << e.what();
        }
    });
    std::this_thread::sleep_for(300ms);
    try {
        for (uint32_t i = 0; i < 64; ++i) {
            Message m = server->recv(10s);
            const bool ok = m.tag == i && m.payload.size() == size_t(1) << 20 && m.payload[12345] == uint8_t(i);
            EXPECT_TRUE(ok) << "message " << i << " arrived as tag " << m.tag;
            if (!ok) break;
        }
    } catch (const Error& e) {
        ADD_FAILURE() << e.what();
        server->abort("test failed");
    }
    sender.join();
}

}  // namespace
}  // namespace pipelm::transport::testing
