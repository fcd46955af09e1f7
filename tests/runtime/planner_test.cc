// The auto split (runtime/pipeline/planner.cc): one partition for prefill and decode.
#include <gtest/gtest.h>

#include <numeric>

#include "runtime/base/error.h"
#include "runtime/pipeline/planner.h"

namespace pipelm::pipeline {
namespace {

std::vector<double> uniform(int n) { return std::vector<double>(n, 1.0); }

int sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }

// 24 equal layers, an lm_head worth 2.4 layers (the 407 M scaling model), 2 stages, 8 chunks:
// 12 | 12 + head gives estimated speed-ups 1.78 (prefill) / 1.83 (decode); 13 | 11 + head gives
// 1.67 / 1.97. The auto split takes the larger minimum.
TEST(Planner, TwoPhaseBalancePrefersEvenLayersWhenHeadIsSmall) {
    EXPECT_EQ(balance_two_phase(uniform(24), 2.4, 2, kPlanPrefillChunks), (std::vector<int>{12, 12}));
}

// A huge head (vocab >> hidden): decode dominates, so the last stage gets fewer layers.
TEST(Planner, TwoPhaseBalanceUnloadsTheLastStageForAHugeHead) {
    const auto c = balance_two_phase(uniform(24), 12.0, 2, kPlanPrefillChunks);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(sum(c), 24);
    EXPECT_GT(c[0], c[1]);
}

TEST(Planner, TwoPhaseBalanceEdgeCases) {
    EXPECT_EQ(balance_two_phase(uniform(61), 3.0, 1, kPlanPrefillChunks), (std::vector<int>{61}));
    EXPECT_EQ(balance_two_phase(uniform(5), 3.0, 5, kPlanPrefillChunks), (std::vector<int>(5, 1)));
    const auto c = balance_two_phase(uniform(61), 0.0, 4, kPlanPrefillChunks);
    ASSERT_EQ(c.size(), 4u);
    EXPECT_EQ(sum(c), 61);
    for (int x : c) EXPECT_TRUE(x == 15 || x == 16) << x;
    // Uneven layers: every stage non-empty and the counts add up.
    std::vector<double> w;
    for (int i = 0; i < 40; ++i) w.push_back(1.0 + (i % 7) * 0.3);
    const auto d = balance_two_phase(w, 5.0, 6, kPlanPrefillChunks);
    ASSERT_EQ(d.size(), 6u);
    EXPECT_EQ(sum(d), 40);
    for (int x : d) EXPECT_GE(x, 1);
}

TEST(Planner, MakePlanAutoUsesTheTwoPhaseSplitAndRefusesBadSplits) {
    ModelCosts m;
    m.layer_bytes.assign(24, 100);
    m.head_bytes = m.head_compute = 240;
    PlanRequest r;
    r.n_stages = 2;
    const auto plan = make_plan(m, r);
    ASSERT_EQ(plan.size(), 2u);
    EXPECT_EQ(plan[0].last_layer - plan[0].first_layer, 12);
    EXPECT_TRUE(plan[0].has_embedding);
    EXPECT_TRUE(plan[1].has_head);
    r.split = "10,10";
    try {
        make_plan(m, r);
        FAIL() << "a split that does not add up was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("sums to 20"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("24"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace pipelm::pipeline
