// In-process links: the conformance suite plus pipeline wiring and back-pressure.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "runtime/base/error.h"
#include "tests/transport/link_conformance.h"
#include "transport/inproc_link.h"

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;

struct InprocPair {
    static std::pair<LinkPtr, LinkPtr> make() { return make_inproc_pair("end A", "end B"); }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Inproc, LinkConformance, ::testing::Types<InprocPair>);

Message text(uint32_t tag, std::string s) {
    Message m;
    m.tag = tag;
    m.control = std::move(s);
    return m;
}

TEST(InprocLink, PeerNamesAreTheOtherEnd) {
    auto [a, b] = make_inproc_pair("stage 0", "stage 1");
    EXPECT_EQ(a->peer_name(), "stage 1");
    EXPECT_EQ(b->peer_name(), "stage 0");
}

TEST(InprocLink, SendBlocksWhileThePeerQueueIsFull) {
    auto [a, b] = make_inproc_pair("A", "B", /*max_queued=*/2);
    a->send(text(1, "1"));
    a->send(text(2, "2"));
    std::atomic<bool> third_sent{false};
    std::thread sender([&, a = a] {
        a->send(text(3, "3"));
        third_sent = true;
    });
    std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(third_sent.load());
    EXPECT_EQ(b->recv(1s).tag, 1u);
    sender.join();
    EXPECT_TRUE(third_sent.load());
    EXPECT_EQ(b->recv(1s).tag, 2u);
    EXPECT_EQ(b->recv(1s).tag, 3u);
}

TEST(InprocLink, AbortUnblocksABlockedSender) {
    auto [a, b] = make_inproc_pair("A", "B", 1);
    a->send(text(1, "fills the queue"));
    std::thread aborter([b = b] {
        std::this_thread::sleep_for(100ms);
        b->abort("receiver gave up");
    });
    try {
        a->send(text(2, "blocks"));
        ADD_FAILURE() << "send did not fail";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kPeerLost);
        EXPECT_NE(std::string(e.what()).find("receiver gave up"), std::string::npos) << e.what();
    }
    aborter.join();
}

TEST(InprocLink, FlushAndCounters) {
    auto [a, b] = make_inproc_pair("A", "B");
    Message m = text(1, "abc");
    m.payload.assign(10, 7);
    a->send(std::move(m));
    a->flush();
    EXPECT_EQ(a->bytes_sent(), 13u);
    b->recv(1s);
    EXPECT_EQ(b->bytes_received(), 13u);
}

TEST(InprocPipeline, OneStageHasNoLinks) {
    auto links = make_inproc_pipeline(1);
    ASSERT_EQ(links.size(), 1u);
    EXPECT_FALSE(links[0].prev || links[0].next || links[0].ring);
}

TEST(InprocPipeline, TwoStagesHaveSeparateNextAndRing) {
    auto links = make_inproc_pipeline(2);
    ASSERT_EQ(links.size(), 2u);
    EXPECT_FALSE(links[0].prev);
    EXPECT_FALSE(links[1].next);
    ASSERT_TRUE(links[0].next && links[1].prev && links[0].ring && links[1].ring);
    EXPECT_NE(links[0].next, links[0].ring);
    links[0].next->send(text(1, "forward"));
    links[1].ring->send(text(2, "back"));
    EXPECT_EQ(links[1].prev->recv(1s).control, "forward");
    EXPECT_EQ(links[0].ring->recv(1s).control, "back");
    EXPECT_EQ(links[0].next->peer_name(), "stage 1 (inproc)");
    EXPECT_EQ(links[1].ring->peer_name(), "stage 0 (inproc)");
}

TEST(InprocPipeline, FourStagesCarryAMessageAroundTheRing) {
    auto links = make_inproc_pipeline(4);
    std::vector<std::thread> stages;
    for (int s = 1; s < 4; ++s) {
        stages.emplace_back([&links, s] {
            Message m = links[s].prev->recv(5s);
            m.control += std::to_string(s);
            (s == 3 ? links[s].ring : links[s].next)->send(std::move(m));
        });
    }
    links[0].next->send(text(9, "0"));
    Message back = links[0].ring->recv(5s);
    for (auto& t : stages) t.join();
    EXPECT_EQ(back.control, "0123");
    EXPECT_EQ(back.tag, 9u);
}

}  // namespace
}  // namespace pipelm::transport::testing
