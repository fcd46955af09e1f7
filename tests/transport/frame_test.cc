// Wire format, greeting, bounded reader, address parsing and token files (no sockets).
#include "transport/frame.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "runtime/base/error.h"
#include "transport/tcp_link.h"

namespace pipelm::transport {
namespace {

using wire::FrameHeader;
using wire::FrameKind;

template <typename F>
ErrorCode code_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.code();
    }
    ADD_FAILURE() << "no error thrown";
    return ErrorCode::kInternal;
}

TEST(Frame, HeaderIsLittleEndianAndRoundTrips) {
    FrameHeader h;
    h.kind = FrameKind::kShutdown;
    h.tag = 0x01020304;
    h.control_bytes = 0x0A0B;
    h.payload_bytes = 0x1122334455ull;
    uint8_t buf[wire::kFrameHeaderBytes];
    wire::encode_frame_header(h, buf);
    const uint8_t expected[wire::kFrameHeaderBytes] = {'P', 'L', 'M', '1', wire::kProtocolVersion, 0, 3, 0, 4, 3, 2, 1,
                                                       0x0B, 0x0A, 0, 0, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0, 0};
    EXPECT_EQ(0, std::memcmp(buf, expected, sizeof buf));
    LinkLimits limits;
    limits.max_payload_bytes = uint64_t(1) << 40;
    const FrameHeader d = wire::decode_frame_header(buf, limits, "peer");
    EXPECT_EQ(d.kind, FrameKind::kShutdown);
    EXPECT_EQ(d.tag, h.tag);
    EXPECT_EQ(d.control_bytes, h.control_bytes);
    EXPECT_EQ(d.payload_bytes, h.payload_bytes);
}

TEST(Frame, RejectsBadHeaders) {
    FrameHeader h;
    h.payload_bytes = 100;
    uint8_t good[wire::kFrameHeaderBytes];
    wire::encode_frame_header(h, good);
    LinkLimits limits;
    auto decode_with = [&](int offset, uint8_t value, LinkLimits l) {
        uint8_t b[wire::kFrameHeaderBytes];
        std::memcpy(b, good, sizeof b);
        if (offset >= 0) b[offset] = value;
        return code_of([&] { wire::decode_frame_header(b, l, "peer"); });
    };
    EXPECT_EQ(decode_with(0, 'X', limits), ErrorCode::kProtocol);  // magic
    EXPECT_EQ(decode_with(4, wire::kProtocolVersion + 1, limits), ErrorCode::kProtocol);  // version
    EXPECT_EQ(decode_with(6, 0, limits), ErrorCode::kProtocol);    // kind 0
    EXPECT_EQ(decode_with(6, 9, limits), ErrorCode::kProtocol);    // kind 9
    EXPECT_EQ(decode_with(7, 1, limits), ErrorCode::kProtocol);    // flags
    EXPECT_EQ(decode_with(23, 0x80, limits), ErrorCode::kProtocol);  // payload 2^63
    LinkLimits small;
    small.max_payload_bytes = 99;
    EXPECT_EQ(decode_with(-1, 0, small), ErrorCode::kProtocol);
    small = LinkLimits{};
    small.max_control_bytes = 3;
    EXPECT_EQ(decode_with(12, 4, small), ErrorCode::kProtocol);
}

TEST(Frame, HeartbeatWithBodyIsRejected) {
    FrameHeader h;
    h.kind = FrameKind::kHeartbeat;
    h.control_bytes = 1;
    uint8_t b[wire::kFrameHeaderBytes];
    wire::encode_frame_header(h, b);
    EXPECT_EQ(code_of([&] { wire::decode_frame_header(b, LinkLimits{}, "p"); }), ErrorCode::kProtocol);
}

TEST(Frame, ClientHello) {
    const auth::Nonce nonce = auth::random_nonce();
    auto hello = wire::encode_client_hello(nonce);
    ASSERT_EQ(hello.size(), 40u);
    const wire::ClientHello h = wire::decode_client_hello(hello.data());
    EXPECT_TRUE(h.magic_ok);
    EXPECT_EQ(h.version, wire::kProtocolVersion);
    EXPECT_EQ(h.nonce, nonce);
    hello[0] = 'X';
    EXPECT_FALSE(wire::decode_client_hello(hello.data()).magic_ok);
    hello = wire::encode_client_hello(nonce);
    hello[7] = 1;  // the zero field
    EXPECT_FALSE(wire::decode_client_hello(hello.data()).magic_ok);
}

// The greeting is version 2: the version 1 greeting sent the token in clear.
TEST(Auth, ProtocolVersionIsBumped) { EXPECT_EQ(wire::kProtocolVersion, 2); }

TEST(Auth, ProofsDependOnTokenRoleAndBothNonces) {
    const auth::Nonce a = auth::random_nonce(), b = auth::random_nonce();
    EXPECT_NE(a, b) << "two nonces from the CSPRNG are equal";
    const auth::Proof p = auth::proof("token", auth::Role::kClient, a, b);
    EXPECT_TRUE(auth::proofs_equal(p, auth::proof("token", auth::Role::kClient, a, b)));
    EXPECT_FALSE(auth::proofs_equal(p, auth::proof("tokem", auth::Role::kClient, a, b)));
    EXPECT_FALSE(auth::proofs_equal(p, auth::proof("token", auth::Role::kListener, a, b)));  // no reflection
    EXPECT_FALSE(auth::proofs_equal(p, auth::proof("token", auth::Role::kClient, b, a)));
    EXPECT_FALSE(auth::proofs_equal(p, auth::proof("token", auth::Role::kClient, a, auth::random_nonce())));
    // The key is the whole token, of any length.
    const auth::Proof long_key = auth::proof(std::string(200, 'k'), auth::Role::kClient, a, b);
    EXPECT_FALSE(auth::proofs_equal(long_key, auth::proof(std::string(199, 'k'), auth::Role::kClient, a, b)));
}

// Known answers (Python: hmac.new(b"token", b"pipelm client\0" + nc + ns, sha256)): every build
// computes the same proofs, whatever its crypto library.
TEST(Auth, ProofIsHmacSha256OfLabelAndNonces) {
    auth::Nonce nc, ns;
    nc.fill(1);
    ns.fill(2);
    auto hex = [](const auth::Proof& p) {
        std::string s;
        for (uint8_t b : p) {
            s += "0123456789abcdef"[b >> 4];
            s += "0123456789abcdef"[b & 15];
        }
        return s;
    };
    EXPECT_EQ(hex(auth::proof("token", auth::Role::kClient, nc, ns)),
              "d82708e6f8055c67d168b9b32466d6bba08e0cbe74ac6a9897a8ae07551af59c");
    EXPECT_EQ(hex(auth::proof("token", auth::Role::kListener, nc, ns)),
              "dc181ec1862a6a4ea016c68a018ea76cf0f6cc0130d4acbbd6665de7895aa82a");
}

TEST(Frame, ByteReaderBoundsEveryLength) {
    wire::ByteWriter w;
    w.u64(42);
    w.i32(-3);
    w.str("hello");
    const std::string bytes = w.take();
    wire::ByteReader r(bytes, "test message");
    EXPECT_EQ(r.u64(), 42u);
    EXPECT_EQ(r.i32(), -3);
    EXPECT_EQ(r.str(), "hello");
    r.expect_end();
    // A string length of 4 GiB in a 9-byte message: refused without allocating.
    wire::ByteWriter lie;
    lie.u32(0xFFFFFFFFu);
    lie.u8(1);
    const std::string lying = lie.take();
    wire::ByteReader r2(lying, "lying message");
    EXPECT_EQ(code_of([&] { r2.str(); }), ErrorCode::kProtocol);
    wire::ByteReader r3(bytes, "short");
    r3.u64();
    EXPECT_EQ(code_of([&] { r3.expect_end(); }), ErrorCode::kProtocol);
}

TEST(HostPort, Parses) {
    HostPort hp = parse_host_port("127.0.0.1:7000");
    EXPECT_EQ(hp.host, "127.0.0.1");
    EXPECT_EQ(hp.port, 7000);
    hp = parse_host_port("[::1]:0");
    EXPECT_EQ(hp.host, "::1");
    EXPECT_EQ(hp.port, 0);
    hp = parse_host_port("node-3.cluster:65535");
    EXPECT_EQ(hp.host, "node-3.cluster");
    for (const char* bad : {"", "7000", "host:", ":7000", "host:70000", "host:7x", "::1:7000", "[::1]7000"})
        EXPECT_EQ(code_of([&] { parse_host_port(bad); }), ErrorCode::kInvalidArgument) << bad;
}

class TokenFile : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pipelm_token_XXXXXX";
        const int fd = mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        close(fd);
        path_ = tmpl;
    }
    void TearDown() override { std::remove(path_.c_str()); }
    void write(const std::string& s) { std::ofstream(path_, std::ios::binary) << s; }
    std::string path_;
};

TEST_F(TokenFile, IsTrimmed) {
    write("  s3cret-token \n\n");
    EXPECT_EQ(read_token_file(path_), "s3cret-token");
}

TEST_F(TokenFile, EmptyIsAnError) {
    write(" \n\t");
    try {
        read_token_file(path_);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
        EXPECT_NE(std::string(e.what()).find("is empty"), std::string::npos) << e.what();
    }
}

TEST_F(TokenFile, MissingIsAnIoError) {
    EXPECT_EQ(code_of([&] { read_token_file(path_ + ".missing"); }), ErrorCode::kIo);
}

TEST_F(TokenFile, TooLongIsAnError) {
    write(std::string(5000, 'x'));
    EXPECT_EQ(code_of([&] { read_token_file(path_); }), ErrorCode::kInvalidArgument);
}

// As ssh does for keys: a token file that group or others can read or write is refused.
TEST_F(TokenFile, GroupOrOthersAccessIsRefused) {
    write("s3cret-token\n");
    for (mode_t mode : {0644, 0640, 0604, 0620, 0602, 0660, 0666}) {
        ASSERT_EQ(::chmod(path_.c_str(), mode), 0);
        try {
            read_token_file(path_);
            ADD_FAILURE() << "mode 0" << std::oct << mode << " accepted";
        } catch (const Error& e) {
            const std::string what = e.what();
            EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << what;
            EXPECT_NE(what.find(path_), std::string::npos) << what;
            EXPECT_NE(what.find("chmod 600 " + path_), std::string::npos) << what;
            EXPECT_EQ(what.find('\n'), std::string::npos) << "one line: " << what;
        }
    }
    for (mode_t mode : {0600, 0400}) {
        ASSERT_EQ(::chmod(path_.c_str(), mode), 0);
        EXPECT_EQ(read_token_file(path_), "s3cret-token") << std::oct << mode;
    }
}

TEST_F(TokenFile, NotARegularFileIsAnIoError) {
    EXPECT_EQ(code_of([&] { read_token_file("/tmp"); }), ErrorCode::kIo);
}

}  // namespace
}  // namespace pipelm::transport
