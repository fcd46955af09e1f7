// Link: an ordered, reliable, duplex channel between two pipeline stages (threads in one
// process, MPI ranks, or TCP peers). Stages talk only to this interface; they never call MPI or
// Asio themselves. Messages carry a small control part (cereal-encoded by the runtime) and a
// bulk payload (activations, token ids, logits), both in host memory.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pipelm::transport {

enum class MsgKind : uint8_t {
    kData = 1,      // runtime message: `tag` says what it is, `control` + `payload` carry it
    kAbort = 2,     // the sender failed; `control` holds the reason (recv turns it into kPeerLost)
    kShutdown = 3,  // orderly end of the job
};

struct Message {
    MsgKind kind = MsgKind::kData;
    uint32_t tag = 0;              // runtime-defined message type (see runtime/pipeline/protocol.h)
    std::string control;           // small cereal-encoded header
    std::vector<uint8_t> payload;  // bulk bytes
};

// Upper bounds a receiver enforces before allocating (a TCP peer cannot make us allocate more).
struct LinkLimits {
    size_t max_control_bytes = size_t(1) << 20;
    size_t max_payload_bytes = size_t(1) << 31;
};

class Link {
public:
    virtual ~Link() = default;

    // Queues `msg` for the peer and returns without waiting for the peer to receive it (the
    // implementation may block while its send queue is full). Throws Error{kPeerLost} once the
    // link is aborted or the peer is gone.
    virtual void send(Message msg) = 0;

    // Next message from the peer, in send order. Throws Error{kTimeout} after `timeout`,
    // Error{kPeerLost} (message names the peer and, for kAbort, the peer's reason) when the peer
    // aborted or vanished, Error{kProtocol} on a malformed frame or a bound exceeded.
    // kShutdown messages are returned to the caller like kData.
    virtual Message recv(std::chrono::milliseconds timeout) = 0;

    // Best-effort: tells the peer (kAbort with `reason`) and fails every pending and future
    // send/recv on this side with kPeerLost/kCancelled. Idempotent, never throws.
    virtual void abort(const std::string& reason) noexcept = 0;

    // Blocks until every queued send has been handed to the OS/peer (or throws kPeerLost).
    virtual void flush() = 0;

    // Human-readable peer description for messages: "stage 2 (tcp 10.0.0.2:7000)".
    virtual std::string peer_name() const = 0;

    // Bytes sent/received so far (payload + control), for benchmarks.
    virtual uint64_t bytes_sent() const = 0;
    virtual uint64_t bytes_received() const = 0;
};

// The links of one stage s of an S-stage pipeline. `prev` carries activations from stage s-1,
// `next` to stage s+1, `ring` joins the last stage and stage 0 (sampled token ids / logits go
// back on it). Null where absent (stage 0 has no prev, the last stage no next, S = 1 no ring).
// The same Link object may fill two roles (e.g. with 2 stages over TCP, next == ring).
struct StageLinks {
    std::shared_ptr<Link> prev;
    std::shared_ptr<Link> next;
    std::shared_ptr<Link> ring;
};

}  // namespace pipelm::transport
