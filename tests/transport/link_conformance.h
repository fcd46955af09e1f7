// The Link conformance suite as a typed, parameterized gtest suite. A binary instantiates it
// with factories that return two connected ends:
//   struct MyPair { static std::pair<LinkPtr, LinkPtr> make(); };
//   INSTANTIATE_TYPED_TEST_SUITE_P(My, LinkConformance, ::testing::Types<MyPair>);
// (The MPI binary runs the same scenarios rank against rank instead.)
#pragma once
#include <gtest/gtest.h>

#include "tests/transport/link_scenarios.h"

namespace pipelm::transport::testing {

template <typename Factory>
class LinkConformance : public ::testing::Test {};

TYPED_TEST_SUITE_P(LinkConformance);

TYPED_TEST_P(LinkConformance, OrderingOf1000Messages) { run_pair(ordering_scenario(), TypeParam::make()); }
TYPED_TEST_P(LinkConformance, PayloadSizesRoundTripByteExact) { run_pair(sizes_scenario(), TypeParam::make()); }
TYPED_TEST_P(LinkConformance, TagControlAndKindRoundTrip) { run_pair(tags_scenario(), TypeParam::make()); }
TYPED_TEST_P(LinkConformance, AbortUnblocksPeerWithReason) { run_pair(abort_scenario(), TypeParam::make()); }
TYPED_TEST_P(LinkConformance, RecvTimeout) { run_pair(timeout_scenario(), TypeParam::make()); }
TYPED_TEST_P(LinkConformance, PeerDestroyedIsPeerLost) { run_pair(destroyed_scenario(), TypeParam::make()); }
TYPED_TEST_P(LinkConformance, QueuedMessagesArriveBeforeClose) { run_pair(drain_scenario(), TypeParam::make()); }
TYPED_TEST_P(LinkConformance, SimultaneousSendsDoNotDeadlock) { run_pair(bidirectional_scenario(), TypeParam::make()); }

REGISTER_TYPED_TEST_SUITE_P(LinkConformance, OrderingOf1000Messages, PayloadSizesRoundTripByteExact,
                            TagControlAndKindRoundTrip, AbortUnblocksPeerWithReason, RecvTimeout,
                            PeerDestroyedIsPeerLost, QueuedMessagesArriveBeforeClose,
                            SimultaneousSendsDoNotDeadlock);

}  // namespace pipelm::transport::testing
