// Hostile peers against the TCP transport, played over 127.0.0.1 with raw sockets: a frame that
// announces 2 GiB and sends little, idle connections that hold the listener, a fake worker that
// reads what the coordinator sends and cannot prove it knows the token. Each test asserts the
// clean error and that memory and time stay bounded.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <regex>
#include <thread>

#include "runtime/base/error.h"
#include "tests/transport/hostile_util.h"
#include "tests/transport/tcp_test_util.h"
#include "transport/frame.h"

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- frames: memory follows the bytes that arrive -----------------------------------------

// Issue 17 §2.3: a frame announcing 2^31 payload bytes made the link allocate them at once
// (2.2 GiB resident) and then wait for them.
TEST(HostileTcp, AnnouncedPayloadIsAllocatedOnlyAsItArrives) {
    RawPeer p = raw_peer();  // default limits: up to 2 GiB per payload
    ASSERT_TRUE(p.link);
    const size_t before = rss_bytes();
    p.raw->write(frame_header(wire::FrameKind::kData, 0, (uint64_t(1) << 31) - 1));
    p.raw->write(std::vector<uint8_t>(size_t(1) << 20, 0x5A));  // 1 MiB of it, then silence
    std::this_thread::sleep_for(300ms);
    const size_t grown = rss_bytes() > before ? rss_bytes() - before : 0;
    EXPECT_LT(grown, size_t(64) << 20) << "resident memory grew by " << (grown >> 20)
                                        << " MiB for 1 MiB received of a frame announcing 2 GiB";
    p.raw.reset();  // the peer goes away mid-frame: the link fails cleanly
    try {
        p.link->recv(5s);
        ADD_FAILURE() << "recv returned";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kPeerLost) << e.what();
        EXPECT_NE(std::string(e.what()).find("raw peer"), std::string::npos) << e.what();
    }
}

// A payload that trickles in whole still arrives byte-exact through the growing buffer.
TEST(HostileTcp, GrowingBufferDeliversALargePayloadIntact) {
    RawPeer p = raw_peer();
    ASSERT_TRUE(p.link);
    const size_t n = (size_t(3) << 20) + 12345;
    std::vector<uint8_t> body(n);
    for (size_t i = 0; i < n; ++i) body[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
    const std::string control = "ctl";
    std::vector<uint8_t> bytes = frame_header(wire::FrameKind::kData, static_cast<uint32_t>(control.size()), n);
    bytes.insert(bytes.end(), control.begin(), control.end());
    std::thread writer([&] {
        for (size_t off = 0; off < bytes.size(); off += 700000) {
            p.raw->write(std::vector<uint8_t>(bytes.begin() + off, bytes.begin() + std::min(bytes.size(), off + 700000)));
            std::this_thread::sleep_for(5ms);
        }
        p.raw->write(body);
    });
    const Message m = p.link->recv(10s);
    writer.join();
    EXPECT_EQ(m.control, control);
    EXPECT_TRUE(m.payload == body) << "payload of " << m.payload.size() << " bytes differs";
    p.raw.reset();  // the link's destructor waits for the peer's EOF
}

// ---- greetings: concurrent, bounded, logged -----------------------------------------------

// Issue 17 §2.4: greetings were read one at a time; 200 idle connections locked a coordinator
// out for 30 s.
TEST(HostileTcp, IdleConnectionsDoNotLockOutARealPeer) {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken);  // 5 s per greeting, 64 at once
    std::shared_ptr<Link> accepted;
    std::thread acceptor([&] {
        try {
            accepted = listener->accept(20s, "server");
        } catch (const Error& e) {
            ADD_FAILURE() << e.what();
        }
    });
    std::vector<std::unique_ptr<RawClient>> idle;
    for (int i = 0; i < 200; ++i) idle.push_back(std::make_unique<RawClient>(listener->port()));
    std::shared_ptr<Link> client;
    try {
        client = tcp_connect(listener->address(), kToken, 3s);
    } catch (const Error& e) {
        ADD_FAILURE() << "the real peer was locked out: " << e.what();
    }
    acceptor.join();
    ASSERT_TRUE(client && accepted);
    Message m;
    m.control = "through";
    client->send(std::move(m));
    EXPECT_EQ(accepted->recv(5s).control, "through");
    // Beyond the cap the oldest idle connections were closed, not left to hold descriptors.
    int closed = 0;
    for (auto& c : idle) closed += c->closed_by_peer(20ms) ? 1 : 0;
    EXPECT_GE(closed, 200 - 64) << "idle connections beyond the cap stayed open";
}

TEST(HostileTcp, GreetingsBeyondTheCapDropTheOldestWithALogLine) {
    TcpOptions opts;
    opts.max_greetings = 4;
    auto listener = TcpListener::bind("127.0.0.1:0", kToken, opts);
    std::vector<std::unique_ptr<RawClient>> idle;
    for (int i = 0; i < 6; ++i) idle.push_back(std::make_unique<RawClient>(listener->port()));
    ::testing::internal::CaptureStderr();
    try {
        listener->accept(500ms);
        ADD_FAILURE() << "accepted a peer that never greeted";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
    }
    const std::string log = ::testing::internal::GetCapturedStderr();
    for (int i = 0; i < 6; ++i) {
        const std::string who = "127.0.0.1:" + std::to_string(idle[i]->socket().local_endpoint().port());
        const bool dropped = log.find("refused a connection from " + who + ": dropped") != std::string::npos;
        EXPECT_EQ(dropped, i < 2) << "connection " << i << " (" << who << "):\n" << log;
        EXPECT_EQ(idle[i]->closed_by_peer(i < 2 ? 1000ms : 50ms), i < 2) << "connection " << i;
    }
}

TEST(HostileTcp, EverySilentConnectionIsDroppedAtItsDeadlineWithALogLine) {
    TcpOptions opts;
    opts.handshake_timeout = 200ms;
    auto listener = TcpListener::bind("127.0.0.1:0", kToken, opts);
    std::vector<std::unique_ptr<RawClient>> idle;
    for (int i = 0; i < 3; ++i) idle.push_back(std::make_unique<RawClient>(listener->port()));
    idle[1]->write(std::vector<uint8_t>{'P', 'L', 'M'});  // a greeting cut short
    ::testing::internal::CaptureStderr();
    EXPECT_THROW(listener->accept(800ms), Error);
    const std::string log = ::testing::internal::GetCapturedStderr();
    for (auto& c : idle) {
        const std::string who = "127.0.0.1:" + std::to_string(c->socket().local_endpoint().port());
        EXPECT_NE(log.find("refused a connection from " + who + ": it sent no complete pipelm greeting within 0.2 s"),
                  std::string::npos)
            << log;
        EXPECT_TRUE(c->closed_by_peer(1s));
    }
}

// A worker polls accept() with a short timeout; a peer whose connection arrives near the end of
// one call must be greeted in the next, never dropped unlogged.
TEST(HostileTcp, ShortAcceptPollingNeverLosesARealPeer) {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken);
    RawClient idle(listener->port());
    std::atomic<bool> stop{false};
    std::atomic<int> served{0};
    std::thread worker([&] {
        while (!stop) {
            try {
                auto link = listener->accept(30ms);
                Message m = link->recv(5s);
                link->send(std::move(m));
                link->flush();
                ++served;
            } catch (const Error& e) {
                if (e.code() != ErrorCode::kTimeout) ADD_FAILURE() << e.what();
            }
        }
    });
    for (int i = 0; i < 20; ++i) {
        try {
            auto c = tcp_connect(listener->address(), kToken, 5s);
            Message m;
            m.control = "ping " + std::to_string(i);
            c->send(std::move(m));
            EXPECT_EQ(c->recv(5s).control, "ping " + std::to_string(i));
        } catch (const Error& e) {
            ADD_FAILURE() << "peer " << i << ": " << e.what();
        }
    }
    stop = true;
    worker.join();
    EXPECT_EQ(served.load(), 20);
}

// ---- the token never travels; both sides prove it ----------------------------------------

// Issue 17 §2.5: the greeting carried the token in clear.
TEST(HostileTcp, TheTokenNeverCrossesTheNetwork) {
    FakeListener fake;
    std::string seen;
    std::thread worker([&] {
        if (!fake.accept(5s)) return;
        seen = fake.read_up_to(wire::kClientHelloBytes, 2s);
        std::vector<uint8_t> challenge{uint8_t(wire::AuthReply::kChallenge)};
        for (int i = 0; i < 32; ++i) challenge.push_back(static_cast<uint8_t>(i));
        fake.write(challenge);
        seen += fake.read_up_to(32, 2s);  // the client's proof
        fake.write(std::vector<uint8_t>{uint8_t(wire::AuthReply::kWrongToken)});
        seen += fake.read_up_to(4096, 500ms);
    });
    EXPECT_THROW(tcp_connect(fake.address(), kToken, 5s), Error);
    worker.join();
    ASSERT_FALSE(seen.empty()) << "the client sent nothing";
    EXPECT_EQ(seen.find(kToken), std::string::npos) << "the token crossed the network";
    EXPECT_EQ(seen.find(std::string(kToken).substr(0, 8)), std::string::npos) << "part of the token crossed the network";
}

// Mutual: a listener that does not know the token cannot pass for a worker.
TEST(HostileTcp, AListenerThatCannotProveTheTokenIsRefused) {
    FakeListener fake;
    std::string after_proof;
    std::thread worker([&] {
        if (!fake.accept(5s)) return;
        fake.read_up_to(wire::kClientHelloBytes, 2s);
        std::vector<uint8_t> challenge{uint8_t(wire::AuthReply::kChallenge)};
        challenge.resize(1 + 32, 7);
        fake.write(challenge);
        fake.read_up_to(32, 2s);
        std::vector<uint8_t> accepted{uint8_t(wire::AuthReply::kAccepted)};
        accepted.resize(1 + 32, 9);  // a "proof" made without the token
        fake.write(accepted);
        after_proof = fake.read_up_to(1, 2s);
    });
    try {
        tcp_connect(fake.address(), kToken, 5s);
        ADD_FAILURE() << "connected to a listener that does not know the token";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
        EXPECT_NE(std::string(e.what()).find("worker " + fake.address() + " could not prove that it knows the token"),
                  std::string::npos)
            << e.what();
    }
    worker.join();
    EXPECT_TRUE(after_proof.empty()) << "the client confirmed a listener that failed its proof";
}

// A proof recorded from one greeting is worthless in the next: the listener's nonce is fresh.
TEST(HostileTcp, AReplayedProofIsRefused) {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken);
    std::shared_ptr<Link> accepted;
    std::thread acceptor([&] {
        try {
            accepted = listener->accept(2s);
        } catch (const Error&) {
        }
    });
    const auth::Nonce nc = auth::random_nonce();
    auth::Proof recorded;
    {
        RawClient raw(listener->port());
        raw.write(wire::encode_client_hello(nc));
        uint8_t challenge[1 + auth::kNonceBytes];
        ASSERT_TRUE(raw.read_exact(challenge, sizeof challenge, 5s));
        auth::Nonce ns;
        std::memcpy(ns.data(), challenge + 1, ns.size());
        recorded = auth::proof(kToken, auth::Role::kClient, nc, ns);  // what a sniffer would have seen
    }
    RawClient replay(listener->port());
    replay.write(wire::encode_client_hello(nc));
    uint8_t challenge[1 + auth::kNonceBytes];
    ASSERT_TRUE(replay.read_exact(challenge, sizeof challenge, 5s));
    replay.write(std::vector<uint8_t>(recorded.begin(), recorded.end()));
    EXPECT_EQ(replay.read_byte(5s), int(wire::AuthReply::kWrongToken));
    EXPECT_TRUE(replay.closed_by_peer(2s));
    acceptor.join();
    EXPECT_FALSE(accepted);
}

}  // namespace
}  // namespace pipelm::transport::testing
