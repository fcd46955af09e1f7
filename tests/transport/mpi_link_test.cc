// MPI links, run as `mpirun -np 2 transport_mpi_test`: rank 0 plays side A and rank 1 side B of
// every conformance scenario, each test on a fresh channel (MPI tag). Skips unless size == 2.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "runtime/base/error.h"
#include "tests/transport/link_scenarios.h"
#include "transport/frame.h"
#include "transport/mpi_link.h"

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;

MpiEnv* g_env = nullptr;
int g_next_channel = 100;  // both ranks run the same tests in the same order

class MpiLinkTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (g_env == nullptr || g_env->size() != 2) GTEST_SKIP() << "needs mpirun -np 2";
        channel_ = g_next_channel++;
    }
    LinkPtr open(const MpiLinkOptions& options = {}) { return make_mpi_link(*g_env, 1 - g_env->rank(), channel_, options); }
    void run(const Scenario& s) {
        LinkPtr link = open();
        try {
            (g_env->rank() == 0 ? s.a : s.b)(link);
        } catch (const std::exception& e) {
            ADD_FAILURE() << s.name << " on rank " << g_env->rank() << " threw: " << e.what();
        }
    }
    int channel_ = 0;
};

TEST_F(MpiLinkTest, OrderingOf1000Messages) { run(ordering_scenario()); }
TEST_F(MpiLinkTest, PayloadSizesRoundTripByteExact) { run(sizes_scenario()); }
TEST_F(MpiLinkTest, TagControlAndKindRoundTrip) { run(tags_scenario()); }
TEST_F(MpiLinkTest, AbortUnblocksPeerWithReason) { run(abort_scenario()); }
TEST_F(MpiLinkTest, RecvTimeout) { run(timeout_scenario()); }
TEST_F(MpiLinkTest, PeerDestroyedIsPeerLost) { run(destroyed_scenario()); }
TEST_F(MpiLinkTest, QueuedMessagesArriveBeforeClose) { run(drain_scenario()); }
TEST_F(MpiLinkTest, SimultaneousSendsDoNotDeadlock) { run(bidirectional_scenario()); }

TEST_F(MpiLinkTest, MalformedFrameIsAProtocolError) {
    if (g_env->rank() == 0) {
        // Raw MPI message on the link's channel: right length for a header, wrong magic.
        std::vector<uint8_t> garbage(wire::kFrameHeaderBytes, 0xEE);
        MPI_Send(garbage.data(), static_cast<int>(garbage.size()), MPI_BYTE, 1, channel_, g_env->comm());
        // A frame shorter than a header.
        MPI_Send(garbage.data(), 3, MPI_BYTE, 1, channel_ + 1000, g_env->comm());
    } else {
        LinkPtr link = open();
        try {
            link->recv(5s);
            ADD_FAILURE() << "recv returned";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::kProtocol) << e.what();
            EXPECT_NE(std::string(e.what()).find("bad magic"), std::string::npos) << e.what();
        }
        LinkPtr short_link = make_mpi_link(*g_env, 0, channel_ + 1000);
        try {
            short_link->recv(5s);
            ADD_FAILURE() << "recv returned";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::kProtocol) << e.what();
        }
    }
    MPI_Barrier(g_env->comm());
}

TEST_F(MpiLinkTest, StageLinksForTwoRanks) {
    StageLinks links = make_mpi_links(*g_env);
    Message m;
    if (g_env->rank() == 0) {
        ASSERT_TRUE(links.next && links.ring);
        EXPECT_FALSE(links.prev);
        EXPECT_NE(links.next, links.ring);
        EXPECT_EQ(links.next->peer_name(), "stage 1 (mpi rank 1)");
        m.control = "forward";
        links.next->send(m);
        EXPECT_EQ(links.ring->recv(10s).control, "back");
    } else {
        ASSERT_TRUE(links.prev && links.ring);
        EXPECT_FALSE(links.next);
        EXPECT_EQ(links.prev->recv(10s).control, "forward");
        m.control = "back";
        links.ring->send(m);
        links.ring->flush();
    }
    MPI_Barrier(g_env->comm());
}

TEST_F(MpiLinkTest, SilentPeerIsLostAfterPeerTimeout) {
    MpiLinkOptions opts;
    opts.peer_timeout = 500ms;
    if (g_env->rank() == 0) {
        // No link on this side: nothing, not even heartbeats, arrives on the channel.
        std::this_thread::sleep_for(1500ms);
    } else {
        LinkPtr link = open(opts);
        const auto t0 = std::chrono::steady_clock::now();
        try {
            link->recv(10s);
            ADD_FAILURE() << "recv returned";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::kPeerLost) << e.what();
        }
        EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
    }
    MPI_Barrier(g_env->comm());
}

TEST(MpiEnvTest, LaunchedByMpirun) { EXPECT_TRUE(MpiEnv::launched_by_mpirun()); }

}  // namespace
}  // namespace pipelm::transport::testing

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    pipelm::transport::MpiEnv env(&argc, &argv);
    pipelm::transport::testing::g_env = &env;
    const int rc = RUN_ALL_TESTS();
    int worst = rc;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, env.comm());
    return worst;
}
