// Stage 0's own thread in the Engine (2+ stages): the test plays stage 1 by hand on the in-process
// links, so it sees exactly what stage 0 sends and when. Checks that submit() returns before stage
// 0 has computed, that a sequence start queued after a ubatch arrives after it (the Tail would
// otherwise sample that ubatch with the new sequence's sampler), that results come back in
// order, and that a send that fails on stage 0's thread reaches the driver at once instead of
// leaving it waiting for a result that cannot come.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "runtime/base/error.h"
#include "runtime/base/thread_pool.h"
#include "runtime/model/arch.h"
#include "runtime/model/stage.h"
#include "runtime/pipeline/planner.h"
#include "runtime/pipeline/protocol.h"
#include "runtime/pipeline/stage_runner.h"
#include "runtime/pipeline/trace.h"
#include "transport/inproc_link.h"

namespace pipelm::pipeline {
namespace {

const std::string kDemo = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

// Stage 0 of the demo model in a 2-stage Engine; stage 1 is the test (links_[1]).
class Stage0 {
public:
    Stage0() : pool_(1) {
        file_ = gguf::GgufFile::open(kDemo);
        cfg_ = model::Glm4Config::from_gguf(*file_);
        PlanRequest pr;
        pr.n_stages = 2;
        pr.n_ctx = 64;
        pr.n_seq = 2;
        plan_ = make_plan(ModelCosts::from_gguf(*file_, cfg_), pr);
        links_ = transport::make_inproc_pipeline(2);
        model::StageSpec spec{0, plan_[0].first_layer, plan_[0].last_layer, plan_[0].has_embedding, plan_[0].has_head};
        model::StageOptions so;
        so.n_ctx = 64;
        so.n_seq = 2;
        so.precision = model::find_arch(cfg_.arch, kDemo).precision;
        stage_ = model::make_stage(file_, cfg_, spec, so, pool_);
        EngineOptions eo;
        eo.n_stages = 2;
        eo.n_seq = 2;
        eo.model_id = model_identity(*file_);
        eo.result_timeout = std::chrono::seconds(60);
        for (const auto& p : plan_) eo.plan.push_back({p.first_layer, p.last_layer});
        engine_ = std::make_unique<Engine>(*stage_, links_[0], eo);
    }
    Engine& engine() { return *engine_; }
    transport::StageLinks& stage1() { return links_[1]; }
    // The next message stage 1 gets (fails the test after 10 s).
    transport::Message recv() { return links_[1].prev->recv(Ms(10000)); }

private:
    std::shared_ptr<gguf::GgufFile> file_;
    model::Glm4Config cfg_;
    std::vector<StagePlan> plan_;
    ThreadPool pool_;
    std::vector<transport::StageLinks> links_;
    std::unique_ptr<model::Stage> stage_;
    std::unique_ptr<Engine> engine_;
};

// A result for ubatch `h` as the last stage would send it: one sampled token per output row.
transport::Message result_for(const UbatchHeader& h) {
    ResultHeader r;
    r.id = h.id;
    for (int32_t row : h.out_rows) {
        r.seq.push_back(h.seq[row]);
        r.tokens.push_back(7);
    }
    r.busy_s = h.busy_s;
    r.busy_s.push_back(0.0);
    r.start_us = h.start_us;
    r.start_us.push_back(wall_us());
    return make_message(kResult, r);
}

TEST(EngineThread, SubmitQueuesAndASequenceStartNeverOvertakesAnEarlierUbatch) {
    Stage0 p;
    Engine& e = p.engine();
    ASSERT_TRUE(e.submits_async());
    std::vector<int32_t> tokens(48), seq(48, 0), pos(48);
    for (int i = 0; i < 48; ++i) tokens[i] = 100 + i, pos[i] = i;
    e.submit(tokens, seq, pos, {47}, true, false);
    // Queued while stage 0 computes the 48-token ubatch: must reach stage 1 after it.
    e.start_seq(0, sampling::SamplerParams{}, {});
    e.submit({5}, {0}, {48}, {0}, true, false);
    EXPECT_EQ(e.in_flight(), 2);

    transport::Message m = p.recv();
    ASSERT_EQ(m.tag, kUbatch) << "the sequence start overtook the ubatch queued before it";
    const UbatchHeader h0 = decode<UbatchHeader>(m.control, "ubatch");
    EXPECT_EQ(h0.seq.size(), 48u);
    EXPECT_EQ(h0.busy_s.size(), 1u);
    m = p.recv();
    EXPECT_EQ(m.tag, kSeqStart);
    m = p.recv();
    ASSERT_EQ(m.tag, kUbatch);
    const UbatchHeader h1 = decode<UbatchHeader>(m.control, "ubatch");
    EXPECT_EQ(h1.pos, std::vector<int32_t>{48});

    p.stage1().ring->send(result_for(h0));
    p.stage1().ring->send(result_for(h1));
    EXPECT_EQ(e.next_result().header.id, h0.id);
    EXPECT_EQ(e.next_result().header.id, h1.id);
    EXPECT_EQ(e.in_flight(), 0);
}

TEST(EngineThread, ASendThatFailsOnStage0sThreadReachesTheDriverAtOnce) {
    Stage0 p;
    Engine& e = p.engine();
    // Stage 1 goes away on the link stage 0 sends on; the ring link (results) stays open, so
    // only stage 0's thread can learn of it.
    p.stage1().prev->abort("stage 1 failed: test");
    const auto t0 = Clock::now();
    e.submit({1, 2, 3}, {0, 0, 0}, {0, 1, 2}, {2}, true, false);
    try {
        e.next_result();
        FAIL() << "a result for a ubatch that was never sent";
    } catch (const Error& err) {
        EXPECT_EQ(err.code(), ErrorCode::kPeerLost) << err.what();
        EXPECT_NE(std::string(err.what()).find("stage 1 failed: test"), std::string::npos) << err.what();
    }
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10)) << "the driver waited for the result timeout";
}

}  // namespace
}  // namespace pipelm::pipeline
