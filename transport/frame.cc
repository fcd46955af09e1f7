// Frame header and greeting encoding (see frame.h for the layout).
#include "transport/frame.h"

#include <cstring>

#include "runtime/base/error.h"

namespace pipelm::transport::wire {
namespace {

constexpr uint8_t kFrameMagic[4] = {'P', 'L', 'M', '1'};
constexpr uint8_t kAuthMagic[4] = {'P', 'L', 'M', 'A'};

void put16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
}
void put32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
uint64_t get64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

std::string hex4(const uint8_t* p) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 4; ++i) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    return s;
}

}  // namespace

void encode_frame_header(const FrameHeader& header, uint8_t* out) {
    std::memcpy(out, kFrameMagic, 4);
    put16(out + 4, kProtocolVersion);
    out[6] = static_cast<uint8_t>(header.kind);
    out[7] = 0;
    put32(out + 8, header.tag);
    put32(out + 12, header.control_bytes);
    put64(out + 16, header.payload_bytes);
}

FrameHeader decode_frame_header(const uint8_t* in, const LinkLimits& limits, const std::string& peer) {
    if (std::memcmp(in, kFrameMagic, 4) != 0)
        PIPELM_THROW(ErrorCode::kProtocol, "malformed frame from ", peer, ": bad magic 0x", hex4(in),
                     " (expected \"PLM1\"): the peer is not a pipelm link or the stream is corrupt");
    const uint16_t version = get16(in + 4);
    if (version != kProtocolVersion)
        PIPELM_THROW(ErrorCode::kProtocol, "frame from ", peer, " uses protocol version ", version,
                     ", this build speaks version ", kProtocolVersion,
                     ": run the same pipelm build on every host");
    const uint8_t kind = in[6];
    if (kind < static_cast<uint8_t>(FrameKind::kData) || kind > static_cast<uint8_t>(FrameKind::kClose))
        PIPELM_THROW(ErrorCode::kProtocol, "malformed frame from ", peer, ": unknown kind ", int(kind));
    if (in[7] != 0)
        PIPELM_THROW(ErrorCode::kProtocol, "malformed frame from ", peer, ": flags ", int(in[7]),
                     " set (must be 0)");
    FrameHeader h;
    h.kind = static_cast<FrameKind>(kind);
    h.tag = get32(in + 8);
    h.control_bytes = get32(in + 12);
    h.payload_bytes = get64(in + 16);
    if (h.control_bytes > limits.max_control_bytes)
        PIPELM_THROW(ErrorCode::kProtocol, "frame from ", peer, " announces ", h.control_bytes,
                     " control bytes, over the limit of ", limits.max_control_bytes);
    if (h.payload_bytes > limits.max_payload_bytes)
        PIPELM_THROW(ErrorCode::kProtocol, "frame from ", peer, " announces ", h.payload_bytes,
                     " payload bytes, over the limit of ", limits.max_payload_bytes);
    if (h.kind == FrameKind::kHeartbeat && (h.control_bytes != 0 || h.payload_bytes != 0))
        PIPELM_THROW(ErrorCode::kProtocol, "malformed frame from ", peer, ": heartbeat with a body");
    return h;
}

FrameKind frame_kind(MsgKind kind) {
    switch (kind) {
        case MsgKind::kData: return FrameKind::kData;
        case MsgKind::kAbort: return FrameKind::kAbort;
        case MsgKind::kShutdown: return FrameKind::kShutdown;
    }
    PIPELM_THROW(ErrorCode::kInvalidArgument, "unknown message kind ", int(kind));
}

MsgKind message_kind(FrameKind kind) {
    switch (kind) {
        case FrameKind::kData: return MsgKind::kData;
        case FrameKind::kAbort: return MsgKind::kAbort;
        case FrameKind::kShutdown: return MsgKind::kShutdown;
        case FrameKind::kHeartbeat:
        case FrameKind::kClose: break;
    }
    PIPELM_THROW(ErrorCode::kInternal, "frame kind ", int(kind), " is not a message");
}

std::array<uint8_t, kClientHelloBytes> encode_client_hello(const auth::Nonce& nonce, uint16_t version) {
    std::array<uint8_t, kClientHelloBytes> out{};
    std::memcpy(out.data(), kAuthMagic, 4);
    put16(out.data() + 4, version);
    put16(out.data() + 6, 0);
    std::memcpy(out.data() + 8, nonce.data(), nonce.size());
    return out;
}

ClientHello decode_client_hello(const uint8_t* in) {
    ClientHello h;
    h.magic_ok = std::memcmp(in, kAuthMagic, 4) == 0 && get16(in + 6) == 0;
    h.version = get16(in + 4);
    std::memcpy(h.nonce.data(), in + 8, h.nonce.size());
    return h;
}

void ByteWriter::u32(uint32_t v) {
    uint8_t b[4];
    put32(b, v);
    out_.append(reinterpret_cast<const char*>(b), 4);
}

void ByteWriter::u64(uint64_t v) {
    uint8_t b[8];
    put64(b, v);
    out_.append(reinterpret_cast<const char*>(b), 8);
}

void ByteWriter::str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    out_ += s;
}

const uint8_t* ByteReader::take(size_t n) {
    if (n > in_.size() - pos_)
        PIPELM_THROW(ErrorCode::kProtocol, "truncated ", what_, ": needs ", n, " more bytes at offset ",
                     pos_, " of ", in_.size());
    const uint8_t* p = reinterpret_cast<const uint8_t*>(in_.data()) + pos_;
    pos_ += n;
    return p;
}

uint8_t ByteReader::u8() { return *take(1); }
uint32_t ByteReader::u32() { return get32(take(4)); }
uint64_t ByteReader::u64() { return get64(take(8)); }

std::string ByteReader::str() {
    const uint32_t n = u32();
    const uint8_t* p = take(n);
    return std::string(reinterpret_cast<const char*>(p), n);
}

void ByteReader::expect_end() const {
    if (pos_ != in_.size())
        PIPELM_THROW(ErrorCode::kProtocol, what_, " has ", in_.size() - pos_, " unexpected trailing bytes");
}

}  // namespace pipelm::transport::wire
