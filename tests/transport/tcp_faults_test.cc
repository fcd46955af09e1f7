// TCP links against broken or dying peers: garbage after authentication, lying lengths, a
// silent half-open peer, and a peer process killed with SIGKILL.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "runtime/base/error.h"
#include "tests/transport/tcp_test_util.h"
#include "transport/frame.h"

#ifndef TRANSPORT_TCP_PEER
#error "TRANSPORT_TCP_PEER must name the helper binary (tests/transport/CMakeLists.txt)"
#endif

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Expects the link's recv to fail with `code` and a message containing `needle`, and the raw
// socket to be closed by the link.
void expect_recv_fails(RawPeer& p, ErrorCode code, const std::string& needle) {
    try {
        p.link->recv(5s);
        ADD_FAILURE() << "recv returned";
    } catch (const Error& e) {
        EXPECT_EQ(error_code_name(e.code()), std::string(error_code_name(code))) << e.what();
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("raw peer"), std::string::npos) << "message names the peer: " << e.what();
    }
    EXPECT_TRUE(p.raw->closed_by_peer(2s)) << "the link did not close the connection";
}

TEST(TcpFaults, GarbageAfterAuthIsAProtocolError) {
    RawPeer p = raw_peer();
    p.raw->write(std::vector<uint8_t>{'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1', '.', '1',
                                      '\r', '\n', '\r', '\n', 0, 0, 0, 0, 0, 0});
    expect_recv_fails(p, ErrorCode::kProtocol, "bad magic");
}

TEST(TcpFaults, OversizedPayloadLengthIsRefusedBeforeAllocating) {
    RawPeer p = raw_peer();
    // 2^62 bytes could not be allocated: reaching the allocator would show up as kOutOfMemory.
    p.raw->write(frame_header(wire::FrameKind::kData, 0, uint64_t(1) << 62));
    expect_recv_fails(p, ErrorCode::kProtocol, "payload bytes, over the limit");
}

TEST(TcpFaults, OversizedControlLengthIsRefused) {
    RawPeer p = raw_peer();
    p.raw->write(frame_header(wire::FrameKind::kData, 0xFFFFFFFFu, 0));
    expect_recv_fails(p, ErrorCode::kProtocol, "control bytes, over the limit");
}

TEST(TcpFaults, WrongVersionAndUnknownKindAreRefused) {
    {
        RawPeer p = raw_peer();
        auto h = frame_header(wire::FrameKind::kData, 0, 0);
        h[4] = 7;
        p.raw->write(h);
        expect_recv_fails(p, ErrorCode::kProtocol, "protocol version 7");
    }
    {
        RawPeer p = raw_peer();
        auto h = frame_header(wire::FrameKind::kData, 0, 0);
        h[6] = 0x42;
        p.raw->write(h);
        expect_recv_fails(p, ErrorCode::kProtocol, "unknown kind");
    }
}

TEST(TcpFaults, ValidFramesBeforeGarbageAreDelivered) {
    RawPeer p = raw_peer();
    auto good = frame_header(wire::FrameKind::kData, 2, 3);
    for (int b : {int('h'), int('i'), 1, 2, 3}) good.push_back(static_cast<uint8_t>(b));
    p.raw->write(good);
    Message m = p.link->recv(5s);
    EXPECT_EQ(m.control, "hi");
    EXPECT_EQ(m.payload, (std::vector<uint8_t>{1, 2, 3}));
    p.raw->write(std::vector<uint8_t>(24, 0xEE));
    expect_recv_fails(p, ErrorCode::kProtocol, "bad magic");
}

TEST(TcpFaults, SilentHalfOpenPeerIsLostAfterPeerTimeout) {
    TcpOptions opts;
    opts.peer_timeout = 400ms;
    RawPeer p = raw_peer(opts);  // authenticates, then never sends a heartbeat
    const auto t0 = Clock::now();
    try {
        p.link->recv(10s);
        ADD_FAILURE() << "recv returned";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kPeerLost) << e.what();
        EXPECT_NE(std::string(e.what()).find("no data or heartbeat from raw peer"), std::string::npos) << e.what();
    }
    const auto took = Clock::now() - t0;
    EXPECT_GE(took, 350ms);
    EXPECT_LT(took, 3s);
}

TEST(TcpFaults, AbortFramePreemptsQueuedMessages) {
    RawPeer p = raw_peer();
    std::vector<uint8_t> bytes = frame_header(wire::FrameKind::kData, 0, 0);
    const std::string reason = "out of memory on stage 2";
    auto abort = frame_header(wire::FrameKind::kAbort, static_cast<uint32_t>(reason.size()), 0);
    bytes.insert(bytes.end(), abort.begin(), abort.end());
    bytes.insert(bytes.end(), reason.begin(), reason.end());
    p.raw->write(bytes);
    std::this_thread::sleep_for(200ms);  // both frames are in
    expect_recv_fails(p, ErrorCode::kPeerLost, ") aborted: out of memory on stage 2");
}

TEST(TcpFaults, SigkilledPeerProcessIsLostQuickly) {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken);
    const std::string port = std::to_string(listener->port());
    const std::string helper = TRANSPORT_TCP_PEER;
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        execl(helper.c_str(), helper.c_str(), port.c_str(), kToken, static_cast<char*>(nullptr));
        _exit(127);
    }
    std::shared_ptr<Link> link;
    try {
        link = listener->accept(10s, "child");
        EXPECT_EQ(link->recv(10s).control, "ready");
    } catch (const Error& e) {
        ADD_FAILURE() << e.what();
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(link);
    const auto t0 = Clock::now();
    try {
        link->recv(15s);
        ADD_FAILURE() << "recv returned";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kPeerLost) << e.what();
        EXPECT_NE(std::string(e.what()).find("child (tcp 127.0.0.1:"), std::string::npos) << e.what();
    }
    EXPECT_LT(Clock::now() - t0, 10s);
}

}  // namespace
}  // namespace pipelm::transport::testing
