// Link conformance scenarios, written as two sides (A and B) that run concurrently on the two
// ends of one link: as two threads for in-process and TCP pairs, as ranks 0 and 1 under
// mpirun. Each side reports with gtest EXPECT/ADD_FAILURE; every blocking call has a bounded
// timeout, so a broken implementation fails instead of hanging.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "transport/link.h"

namespace pipelm::transport::testing {

using LinkPtr = std::shared_ptr<Link>;
using Side = void (*)(LinkPtr& link);  // captureless lambdas

struct Scenario {
    const char* name;
    Side a;
    Side b;
};

// 1000 messages A -> B arrive in order with their tag, control and payload.
Scenario ordering_scenario();
// Payloads of 0 B, 1 B, 4 KiB, 1 MiB and 64 MiB go A -> B -> A byte-exact.
Scenario sizes_scenario();
// Tags (0, 1, 0xFFFFFFFF), binary control bytes and kShutdown round-trip.
Scenario tags_scenario();
// A aborts while B is blocked in recv: B gets kPeerLost with the reason within 2 s; later
// send/recv fail on both sides.
Scenario abort_scenario();
// B's recv with a 100 ms timeout throws kTimeout after ~100 ms; the link keeps working.
Scenario timeout_scenario();
// A's link object is destroyed while B is blocked in recv: B gets kPeerLost.
Scenario destroyed_scenario();
// A sends 3 messages and kShutdown, then destroys its link: B receives all four, then kPeerLost.
Scenario drain_scenario();
// Both sides send 32 x 1 MiB at the same time, then receive: no deadlock.
Scenario bidirectional_scenario();

std::vector<Scenario> all_scenarios();

// Runs a.a(first) on this thread and a.b(second) on another; exceptions become failures.
void run_pair(const Scenario& s, std::pair<LinkPtr, LinkPtr> links);

// Deterministic test bytes.
std::vector<uint8_t> pattern(size_t n, uint32_t seed);

}  // namespace pipelm::transport::testing
