// The auto split (runtime/pipeline/planner.cc): one partition for prefill and decode.
#include <gtest/gtest.h>

#include <numeric>

#include "runtime/base/error.h"
#include "runtime/model/mkmodel.h"
#include "runtime/pipeline/planner.h"
#include "tests/runtime/gguf_test_util.h"

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

// The bytes of a model shape without a file (plan --preset) equal those of the file mkmodel
// writes for it, tensor table for tensor table (an --ftype mix with fallbacks: 'small' has rows
// of 256 and 512, q4_k_m's q6_K/q4_K rules and attn_v/ffn_down promotions all apply).
TEST(Planner, CostsFromConfigMatchTheFileOfThatShape) {
    TempDir dir("pipelm-planner-test");
    model::MkModelSpec spec = model::mkmodel_preset("small");
    spec.ftype = model::parse_ftype("q4_k_m");
    const std::string path = dir.path("small.gguf");
    model::mkmodel_write(spec, path, 1);
    const auto f = gguf::GgufFile::open(path);
    const ModelCosts a = ModelCosts::from_gguf(*f, spec.n_layer);
    const ModelCosts b = ModelCosts::from_config(model::mkmodel_config(spec), [&](model::TensorId id, int64_t ne0, int l) {
        return model::mkmodel_matrix_type(spec, id, ne0, l);
    });
    EXPECT_EQ(a.layer_bytes, b.layer_bytes);
    EXPECT_EQ(a.embedding_bytes, b.embedding_bytes);
    EXPECT_EQ(a.head_bytes, b.head_bytes);
    EXPECT_EQ(a.head_compute, b.head_compute);
}

ModelCosts glm4_9b_q4_k_m() {
    model::MkModelSpec spec = model::mkmodel_preset("glm4-9b");
    spec.ftype = model::parse_ftype("q4_k_m");
    return ModelCosts::from_config(model::mkmodel_config(spec), [&](model::TensorId id, int64_t ne0, int l) {
        return model::mkmodel_matrix_type(spec, id, ne0, l);
    });
}

PlanRequest four_stages(uint64_t mem) {
    PlanRequest r;
    r.n_stages = 4;
    r.n_ctx = 4096;
    r.kv_bytes_per_token_layer = 2 * 256 * 4;  // K + V, kv_dim 256, f32
    if (mem) r.mem_budget = {mem};
    return r;
}

// Issue 16 §6: under --mem the auto split used to be the unconstrained balance (10,10,10,10 for
// GLM-4-9B Q4_K_M: the last stage, with the lm_head, needs 1869.6 MiB) and was refused at
// 1600 MiB although other splits fit. Now it is the best-balanced split that fits.
TEST(Planner, AutoSplitUnderMemFindsASplitThatFits) {
    const ModelCosts m = glm4_9b_q4_k_m();
    const uint64_t mem = 1600ull << 20;
    const auto free_plan = make_plan(m, four_stages(0));
    EXPECT_GT(free_plan.back().weight_bytes + free_plan.back().kv_bytes, mem) << "the case no longer shows the bug";
    const auto plan = make_plan(m, four_stages(mem));
    ASSERT_EQ(plan.size(), 4u);
    int layers = 0;
    for (const auto& p : plan) {
        EXPECT_LE(p.weight_bytes + p.kv_bytes, mem) << "stage " << p.index;
        layers += p.last_layer - p.first_layer;
    }
    EXPECT_EQ(layers, 40);
    EXPECT_LT(plan.back().last_layer - plan.back().first_layer, 10);  // the head's stage gives up layers
    // Without a budget (or with a roomy one) the split is the unconstrained one.
    const auto roomy = make_plan(m, four_stages(64ull << 30));
    for (size_t s = 0; s < 4; ++s) EXPECT_EQ(roomy[s].last_layer, free_plan[s].last_layer);
}

// min_fitting_budget is the least largest stage over all splits (checked by brute force on a
// small uneven model), the plan fits at exactly that budget, and one byte less is refused with
// an error naming it.
TEST(Planner, RefusalNamesTheSmallestBudgetThatFits) {
    ModelCosts m;
    m.layer_bytes = {70, 30, 50, 90, 20, 60, 40, 80, 10};
    m.embedding_bytes = 100;
    m.head_bytes = m.head_compute = 120;
    uint64_t brute = ~0ull;
    for (int a = 1; a <= 7; ++a)
        for (int b = a + 1; b <= 8; ++b) {
            const uint64_t w = std::max({stage_bytes(m, 5, 0, 3, 0, a), stage_bytes(m, 5, 1, 3, a, b), stage_bytes(m, 5, 2, 3, b, 9)});
            brute = std::min(brute, w);
        }
    PlanRequest r;
    r.n_stages = 3;
    r.n_ctx = 5;
    r.kv_bytes_per_token_layer = 1;
    EXPECT_EQ(min_fitting_budget(m, 5, 3), brute);
    r.mem_budget = {brute};
    EXPECT_EQ(make_plan(m, r).size(), 3u);
    r.mem_budget = {brute - 1};
    try {
        make_plan(m, r);
        FAIL() << "a budget below every split was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory);
        EXPECT_NE(std::string(e.what()).find("smallest budget that fits"), std::string::npos) << e.what();
    }
    // The GLM-4-9B Q4_K_M case: 1572.5 MiB (stage 0: 9 layers + the embedding).
    EXPECT_NEAR(static_cast<double>(min_fitting_budget(glm4_9b_q4_k_m(), 2048ull * 4096, 4)) / (1 << 20), 1572.5, 0.1);
}

// Issue 17: a lost stage with no standby goes to the survivors when their --mem allows. Stage 0
// keeps its layers, the survivors share the rest in order (the lost stage's layers move to its
// neighbours), each within the budget it had; a budget with no room is refused, and so is a
// pipeline with no survivor but stage 0.
TEST(Planner, ReplanOverSurvivorsKeepsStageZeroAndFitsTheBudgets) {
    ModelCosts m;
    m.layer_bytes.assign(24, 100);
    m.embedding_bytes = 50;
    m.head_bytes = m.head_compute = 240;
    PlanRequest r;
    r.n_stages = 4;
    r.mem_budget = {2000};
    const auto plan = make_plan(m, r);
    ASSERT_EQ(plan.size(), 4u);
    std::vector<int> survivor;
    const auto after = replan_over_survivors(m, r, plan, {2}, &survivor);
    ASSERT_EQ(after.size(), 3u);
    EXPECT_EQ(survivor, (std::vector<int>{0, 1, 3}));
    EXPECT_EQ(after[0].first_layer, 0);
    EXPECT_EQ(after[0].last_layer, plan[0].last_layer);
    EXPECT_EQ(after[1].first_layer, after[0].last_layer);
    EXPECT_EQ(after[2].first_layer, after[1].last_layer);
    EXPECT_EQ(after[2].last_layer, 24);
    EXPECT_TRUE(after[2].has_head);
    EXPECT_FALSE(after[1].has_head);
    for (const auto& p : after) EXPECT_LE(p.weight_bytes + p.kv_bytes, 2000u) << "stage " << p.index;
    // Each survivor keeps its own budget: stage 3 (now 2) has room for only 4 layers + the head.
    r.mem_budget = {2000, 2000, 2000, 640};
    const auto tight = replan_over_survivors(m, r, make_plan(m, r), {2}, &survivor);
    EXPECT_EQ(tight[2].last_layer - tight[2].first_layer, 4);
    // No room: the survivors' budgets hold fewer than the 24 layers.
    r.mem_budget = {700, 700, 700, 700};
    try {
        replan_over_survivors(m, r, make_plan(m, r), {1}, &survivor);
        FAIL() << "survivors without room took the lost layers";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory);
        EXPECT_NE(std::string(e.what()).find("--mem"), std::string::npos) << e.what();
    }
    // Nothing but stage 0 survives; stage 0 itself cannot be lost.
    r.mem_budget.clear();
    for (const std::vector<int>& lost : {std::vector<int>{1, 2, 3}, std::vector<int>{0}}) {
        try {
            replan_over_survivors(m, r, plan, lost, &survivor);
            FAIL() << "replanned without a surviving worker";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::kPeerLost) << e.what();
        }
    }
}

}  // namespace
}  // namespace pipelm::pipeline
