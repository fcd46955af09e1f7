// In-process links: two Link ends joined by mutex + condition-variable queues, for running a
// whole pipeline as threads of one process (tests, `--stages N` on one host).
//
// Wire format: none; Message objects are moved from the sender's hands into the receiver's
// queue (no copy, no serialization).
// Threading: any thread may call send/recv/abort on either end; each direction is a bounded
// FIFO (`max_queued` messages): send blocks while the peer's queue is full, recv blocks until a
// message, the timeout, or a failure. There are no threads of its own.
// Failure semantics:
//   * abort(reason) on end A: A's own send/recv throw kCancelled; B's recv and send throw
//     kPeerLost "<A> aborted: <reason>" at once, ahead of messages still queued (the aborting
//     side's output is moot).
//   * destroying end A: B first receives everything A queued, then kPeerLost "<A> closed the
//     link"; B's send throws kPeerLost at once.
//   * flush() returns at once: a queued message has already reached the peer.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "transport/link.h"

namespace pipelm::transport {

// Returns {end A, end B}. `name_a` names end A (what end B reports as its peer_name()), and
// `name_b` names end B: pair.first->peer_name() == name_b.
std::pair<std::shared_ptr<Link>, std::shared_ptr<Link>> make_inproc_pair(std::string name_a,
                                                                       std::string name_b,
                                                                       size_t max_queued = 64);

// Links for stages 0..n_stages-1: stage s's `next` and stage s+1's `prev` are the two ends of
// one pair; `ring` joins the last stage and stage 0 (a separate pair, also for 2 stages); with
// one stage everything is null. Peer names read "stage k (inproc)".
std::vector<StageLinks> make_inproc_pipeline(int n_stages, size_t max_queued = 64);

}  // namespace pipelm::transport
