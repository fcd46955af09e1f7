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
// A receiver validates every field before allocating anything; a violation is Error{kProtocol}.
// Heartbeat frames carry nothing and are never handed to the caller; close frames (MPI only:
// TCP uses FIN) say the peer's Link object was destroyed; abort frames carry the reason as
// control bytes.
//
// TCP greeting (client -> listener, before any frame; the listener reads nothing else first):
//   magic "PLMA" | u16 version | u16 zero | u32 token bytes (<= kMaxTokenBytes) | token
// Listener reply: one byte, AuthReply.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "transport/link.h"

namespace pipelm::transport::wire {

constexpr uint16_t kProtocolVersion = 1;
constexpr size_t kFrameHeaderBytes = 24;
constexpr size_t kAuthHeaderBytes = 12;
constexpr size_t kMaxTokenBytes = 4096;

enum class FrameKind : uint8_t {
    kData = 1,
    kAbort = 2,
    kShutdown = 3,
    kHeartbeat = 4,
    kClose = 5,
};

enum class AuthReply : uint8_t {
    kAccepted = 1,
    kWrongToken = 2,
    kBadVersion = 3,
    kMalformed = 4,
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

// The client's greeting: header + token bytes.
std::vector<uint8_t> encode_auth_hello(const std::string& token, uint16_t version = kProtocolVersion);

struct AuthHeader {
    bool magic_ok = false;
    uint16_t version = 0;
    uint32_t token_bytes = 0;
};
AuthHeader decode_auth_header(const uint8_t* in);

// Compares in time that depends only on expected.size(), not on where the first mismatch is.
bool tokens_equal(const std::string& expected, const std::string& received) noexcept;

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
