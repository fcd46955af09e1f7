// Wire format shared by the TCP and MPI links, and the bounded byte codec used for the
// bootstrap's control messages. Everything is little-endian and fixed-size where it matters:
//
// Frame = header (24 bytes) + control bytes + payload bytes
//   off size field
//     0    4 magic "PLM1"
//     4    2 protocol version (kProtocolVersion)
//     6    1 kind: 1 data, 2 abort, 3 shutdown, 4 heartbeat, 5 close (see FrameKind)
//     7    1 flags, must be 0
//     8    4 tag (runtime message type)
//    12    4 control bytes   (<= LinkLimits::max_control_bytes)
//    16    8 payload bytes   (<= LinkLimits::max_payload_bytes)
// A receiver validates every field before allocating anything, then allocates the body only as
// its bytes arrive; a violation is Error{kProtocol}.
// Heartbeat frames carry nothing and are never handed to the caller; close frames (MPI only:
// TCP uses FIN) say the peer's Link object was destroyed; abort frames carry the reason as
// control bytes.
//
// TCP greeting (before any frame; the listener reads nothing else first): a mutual
// challenge-response over the shared token, which never crosses the network (auth.h):
//   ClientHello (client -> listener, 40 bytes): magic "PLMA" | u16 version | u16 zero | nonce
// then fixed-size AuthReply bytes, nonces and proofs in the order auth.h gives.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "transport/auth.h"
#include "transport/link.h"

namespace pipelm::transport::wire {

// 2: challenge-response greeting (version 1 sent the token in clear).
constexpr uint16_t kProtocolVersion = 2;
constexpr size_t kFrameHeaderBytes = 24;
constexpr size_t kClientHelloBytes = 8 + auth::kNonceBytes;
constexpr size_t kMaxTokenBytes = 4096;

enum class FrameKind : uint8_t {
    kData = 1,
    kAbort = 2,
    kShutdown = 3,
    kHeartbeat = 4,
    kClose = 5,
};

enum class AuthReply : uint8_t {
    kAccepted = 1,    // listener: the client's proof holds (its proof follows); client: so does the listener's
    kWrongToken = 2,  // the client's proof does not hold: another token
    kBadVersion = 3,  // the client speaks another protocol version
    kMalformed = 4,   // kept for version 1 peers, which answer a version 2 greeting with it
    kChallenge = 5,   // the listener's nonce follows
};

struct FrameHeader {
    FrameKind kind = FrameKind::kData;
    uint32_t tag = 0;
    uint32_t control_bytes = 0;
    uint64_t payload_bytes = 0;
};

// Writes the 24-byte header to `out`.
void encode_frame_header(const FrameHeader& header, uint8_t* out);

// Parses and validates 24 bytes from `in`: magic, version, kind, flags and both lengths against
// `limits`. Throws Error{kProtocol} naming `peer` on any violation.
FrameHeader decode_frame_header(const uint8_t* in, const LinkLimits& limits, const std::string& peer);

// FrameKind for a caller-visible message kind and back.
FrameKind frame_kind(MsgKind kind);
MsgKind message_kind(FrameKind kind);

// The client's first message.
std::array<uint8_t, kClientHelloBytes> encode_client_hello(const auth::Nonce& nonce,
                                                           uint16_t version = kProtocolVersion);

struct ClientHello {
    bool magic_ok = false;  // magic and the zero field
    uint16_t version = 0;
    auth::Nonce nonce{};
};
ClientHello decode_client_hello(const uint8_t* in);

// Append-only little-endian writer for small control messages.
class ByteWriter {
public:
    void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u32(uint32_t v);
    void u64(uint64_t v);
    void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
    void str(const std::string& s);  // u32 length + bytes
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

// Reader over bytes already bounded by LinkLimits: every length is checked against what is
// left, so a lying length field costs nothing. Throws Error{kProtocol} naming `what`.
class ByteReader {
public:
    ByteReader(const std::string& in, std::string what) : in_(in), what_(std::move(what)) {}
    uint8_t u8();
    uint32_t u32();
    uint64_t u64();
    int32_t i32() { return static_cast<int32_t>(u32()); }
    std::string str();
    void expect_end() const;

private:
    const uint8_t* take(size_t n);
    const std::string& in_;
    std::string what_;
    size_t pos_ = 0;
};

}  // namespace pipelm::transport::wire
