// Fuzz target: the byte stream a TCP or MPI link receives, as frames (transport/frame.h): each
// 24-byte header is parsed and validated by wire::decode_frame_header against the link's limits
// (the defaults, and tight ones so the limit checks are reached), then its body is skipped as the
// link would read it. pipelm::Error is the documented refusal; anything else is a finding. A
// header that parses must re-encode to the same 24 bytes, fit the limits, and a data, abort or
// shutdown frame must map to a message kind (heartbeat and close never reach the caller).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "runtime/base/error.h"
#include "transport/frame.h"
#include "transport/link.h"

namespace {

using namespace pipelm::transport;

// Returns false once the stream is refused or ends.
bool one_frame(const uint8_t*& p, size_t& left, const LinkLimits& limits) {
    if (left < wire::kFrameHeaderBytes) return false;
    wire::FrameHeader h;
    try {
        h = wire::decode_frame_header(p, limits, "fuzz peer");
    } catch (const pipelm::Error&) {
        return false;
    }
    if (h.control_bytes > limits.max_control_bytes || h.payload_bytes > limits.max_payload_bytes) __builtin_trap();
    uint8_t again[wire::kFrameHeaderBytes];
    wire::encode_frame_header(h, again);
    if (std::memcmp(again, p, sizeof again) != 0) __builtin_trap();
    if (h.kind == wire::FrameKind::kData || h.kind == wire::FrameKind::kAbort || h.kind == wire::FrameKind::kShutdown) {
        if (wire::frame_kind(wire::message_kind(h.kind)) != h.kind) __builtin_trap();
    } else if (h.kind == wire::FrameKind::kHeartbeat && (h.control_bytes != 0 || h.payload_bytes != 0)) {
        __builtin_trap();
    }
    p += wire::kFrameHeaderBytes;
    left -= wire::kFrameHeaderBytes;
    const uint64_t body = uint64_t(h.control_bytes) + h.payload_bytes;
    if (body > left) return false;  // the link would wait for the rest
    p += body;
    left -= static_cast<size_t>(body);
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    LinkLimits tight;
    tight.max_control_bytes = 64;
    tight.max_payload_bytes = 256;
    for (const LinkLimits& limits : {LinkLimits{}, tight}) {
        const uint8_t* p = data;
        size_t left = size;
        while (one_frame(p, left, limits)) {
        }
    }
    return 0;
}
