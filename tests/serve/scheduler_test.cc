// The continuous-batching scheduler on a real pipeline: the embedded glm4-demo model in 1 or 2
// in-process stages (stage threads and an Engine wired as `pipelm` does). Checks that a request
// gives the same tokens alone and among others (batch invariance), that ubatches mix decode and
// prompt tokens and keep the pipe full, that slots come free at the step after a cancel, that the
// queue refuses beyond its size, prompt-prefix reuse, and the stop conditions.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "runtime/base/error.h"
#include "runtime/model/arch.h"
#include "runtime/model/stage.h"
#include "runtime/pipeline/planner.h"
#include "runtime/pipeline/scheduler.h"
#include "transport/inproc_link.h"

namespace pipelm::pipeline {
namespace {

const std::string kDemo = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
using Ms = std::chrono::milliseconds;

// S in-process stages of the demo model: stages 1..S-1 on their own threads, stage 0 in the Engine.
class Pipeline {
public:
    Pipeline(int n_stages, int n_seq, int n_ctx) {
        file_ = gguf::GgufFile::open(kDemo);
        cfg_ = model::Glm4Config::from_gguf(*file_);
        PlanRequest pr;
        pr.n_stages = n_stages;
        pr.n_ctx = n_ctx;
        pr.n_seq = n_seq;
        plan_ = make_plan(ModelCosts::from_gguf(*file_, cfg_), pr);
        auto links = n_stages > 1 ? transport::make_inproc_pipeline(n_stages) : std::vector<transport::StageLinks>(1);
        const std::string id = model_identity(*file_);
        for (int s = 0; s < n_stages; ++s) {
            pools_.push_back(std::make_unique<ThreadPool>(1));
            model::StageSpec spec{s, plan_[s].first_layer, plan_[s].last_layer, plan_[s].has_embedding, plan_[s].has_head};
            model::StageOptions so;
            so.n_ctx = n_ctx;
            so.n_seq = n_seq;
            so.precision = model::find_arch(cfg_.arch, kDemo).precision;
            stages_.push_back(model::make_stage(file_, cfg_, spec, so, *pools_.back()));
        }
        for (int s = 1; s < n_stages; ++s) {
            RunnerOptions ro;
            ro.model_id = id;
            ro.n_stages = n_stages;
            ro.n_seq = n_seq;
            auto runner = std::make_shared<StageRunner>(*stages_[s], links[s], ro);
            threads_.emplace_back([runner] { runner->run(); });
        }
        EngineOptions eo;
        eo.n_stages = n_stages;
        eo.ubatch = 512;
        eo.n_seq = n_seq;
        eo.model_id = id;
        eo.model_name = kDemo;
        for (const auto& p : plan_) eo.plan.push_back({p.first_layer, p.last_layer});
        engine_ = std::make_unique<Engine>(*stages_[0], links[0], eo);
        engine_->handshake();
    }
    ~Pipeline() {
        engine_->shutdown();
        for (auto& t : threads_) t.join();
    }
    Engine& engine() { return *engine_; }
    int32_t eos() const { return static_cast<int32_t>(file_->get_int("tokenizer.ggml.eos_token_id", -1)); }

private:
    std::shared_ptr<gguf::GgufFile> file_;
    model::Glm4Config cfg_;
    std::vector<StagePlan> plan_;
    std::vector<std::unique_ptr<ThreadPool>> pools_;
    std::vector<std::unique_ptr<model::Stage>> stages_;
    std::vector<std::thread> threads_;
    std::unique_ptr<Engine> engine_;
};

struct Outcome {
    std::vector<int32_t> tokens;
    Finish finish = Finish::kNone;
    bool operator==(const Outcome& o) const { return tokens == o.tokens && finish == o.finish; }
};

// Reads everything new from s into o; true once it has ended.
bool collect(Sequence& s, Outcome* o) {
    SeqUpdate u;
    while (o->finish == Finish::kNone && s.wait(&u, Ms(0))) {
        o->tokens.insert(o->tokens.end(), u.tokens.begin(), u.tokens.end());
        o->finish = u.finish;
    }
    return o->finish != Finish::kNone;
}

// Steps the scheduler on this thread until every sequence has ended.
std::vector<Outcome> drain(Scheduler& sch, const std::vector<std::shared_ptr<Sequence>>& seqs) {
    std::vector<Outcome> out(seqs.size());
    for (int guard = 0; guard < 100000; ++guard) {
        bool all = true;
        for (size_t i = 0; i < seqs.size(); ++i) all &= collect(*seqs[i], &out[i]);
        if (all) return out;
        sch.step(Ms(1));
    }
    ADD_FAILURE() << "sequences did not end";
    return out;
}

GenRequest make_request(uint32_t seed, int n_prompt, int max_tokens, float temperature) {
    std::mt19937 rng(seed);
    GenRequest r;
    for (int i = 0; i < n_prompt; ++i) r.prompt.push_back(static_cast<int32_t>(rng() % 4000) + 10);
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.sampler.temperature = temperature;
    r.sampler.seed = seed;
    return r;
}

// 12 requests: prompts of 1..57 tokens (several ubatches of 16), 3..24 new tokens, half greedy,
// half sampled with a seed.
std::vector<GenRequest> workload() {
    std::vector<GenRequest> w;
    for (int i = 0; i < 12; ++i)
        w.push_back(make_request(100 + i, 1 + (i * 37) % 57, 3 + (i * 7) % 22, i % 2 ? 0.9f : 0.0f));
    return w;
}

SchedulerOptions options(int n_slots, int ubatch, int n_ctx) {
    SchedulerOptions o;
    o.n_slots = n_slots;
    o.ubatch = ubatch;
    o.n_ctx = n_ctx;
    return o;
}

std::vector<Outcome> one_at_a_time(Scheduler& sch, const std::vector<GenRequest>& w) {
    std::vector<Outcome> out;
    for (const auto& r : w) out.push_back(drain(sch, {sch.submit(r)})[0]);
    return out;
}

TEST(Scheduler, SameTokensAloneOrAmongOthersInOneOrTwoStages) {
    const auto w = workload();
    Pipeline p2(2, 8, 128);
    Scheduler alone(p2.engine(), options(8, 16, 128));
    const std::vector<Outcome> ref = one_at_a_time(alone, w);
    for (size_t i = 0; i < w.size(); ++i) {
        EXPECT_EQ(ref[i].finish, Finish::kLength);
        EXPECT_EQ(static_cast<int>(ref[i].tokens.size()), w[i].max_tokens);
    }
    // All 12 at once on 8 slots: 4 wait, prompts are chunked into ubatches that also carry the
    // decode tokens of the running ones.
    Pipeline p2b(2, 8, 128);
    Scheduler together(p2b.engine(), options(8, 16, 128));
    std::vector<std::shared_ptr<Sequence>> seqs;
    for (const auto& r : w) seqs.push_back(together.submit(r));
    const std::vector<Outcome> got = drain(together, seqs);
    for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(got[i], ref[i]) << "request " << i;
    const SchedulerStats st = together.stats();
    EXPECT_GT(st.mixed_ubatches, 0u);
    EXPECT_EQ(st.free_slots, 8);
    EXPECT_EQ(st.running, 0);
    EXPECT_EQ(st.finished_length, w.size());
    // Two stages: most results were awaited with two ubatches in the pipe.
    EXPECT_GT(st.full_waits * 2, st.waits) << st.full_waits << " of " << st.waits;
    // One stage, a different ubatch size: the same tokens.
    Pipeline p1(1, 4, 128);
    Scheduler one(p1.engine(), options(4, 7, 128));
    seqs.clear();
    for (const auto& r : w) seqs.push_back(one.submit(r));
    const std::vector<Outcome> got1 = drain(one, seqs);
    for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(got1[i], ref[i]) << "request " << i << " on 1 stage";
}

TEST(Scheduler, CancelFreesTheSlotAtTheNextStepAndTheSlotIsReusable) {
    Pipeline p(2, 4, 256);
    Scheduler sch(p.engine(), options(4, 32, 256));
    std::vector<std::shared_ptr<Sequence>> seqs;
    for (int i = 0; i < 4; ++i) seqs.push_back(sch.submit(make_request(7 + i, 20, 200, 0.0f)));
    // Run until every sequence has a token: all four slots are busy.
    std::vector<Outcome> out(4);
    for (int guard = 0; guard < 1000; ++guard) {
        bool all = true;
        for (int i = 0; i < 4; ++i) {
            collect(*seqs[i], &out[i]);
            all &= !out[i].tokens.empty();
        }
        if (all) break;
        sch.step(Ms(1));
    }
    EXPECT_EQ(sch.stats().free_slots, 0);
    seqs[1]->cancel();
    seqs[3]->cancel(Finish::kStop);  // as when the client found its stop string
    seqs[3]->cancel();               // only the first reason counts
    sch.step(Ms(1));
    EXPECT_EQ(sch.stats().free_slots, 2);
    EXPECT_EQ(sch.stats().cancelled, 1u);
    EXPECT_EQ(sch.stats().finished_stop, 1u);
    collect(*seqs[3], &out[3]);
    EXPECT_EQ(out[3].finish, Finish::kStop);
    // The freed slots still have ubatches of the cancelled sequences in the pipe; new requests
    // on them give the tokens they give alone.
    const GenRequest a = make_request(55, 30, 12, 0.0f), b = make_request(56, 9, 12, 0.7f);
    auto sa = sch.submit(a), sb = sch.submit(b);
    seqs[0]->cancel();
    seqs[2]->cancel();
    const auto got = drain(sch, {sa, sb});
    EXPECT_EQ(sch.stats().free_slots, 4);
    EXPECT_GT(sch.stats().dropped_outputs, 0u);
    Pipeline q(2, 4, 256);
    Scheduler fresh(q.engine(), options(4, 32, 256));
    EXPECT_EQ(got[0], drain(fresh, {fresh.submit(a)})[0]);
    EXPECT_EQ(got[1], drain(fresh, {fresh.submit(b)})[0]);
}

TEST(Scheduler, RefusesBeyondTheQueueAndValidatesRequests) {
    Pipeline p(1, 1, 64);
    SchedulerOptions o = options(1, 16, 64);
    o.max_queue = 2;
    Scheduler sch(p.engine(), o);
    std::vector<std::shared_ptr<Sequence>> seqs;
    for (int i = 0; i < 3; ++i) seqs.push_back(sch.submit(make_request(i, 5, 3, 0.0f)));
    for (const auto& s : seqs) EXPECT_NE(s, nullptr);  // one takes the free slot, two wait
    EXPECT_EQ(sch.submit(make_request(9, 5, 3, 0.0f)), nullptr);
    EXPECT_EQ(sch.stats().rejected, 1u);
    EXPECT_GE(sch.retry_after_s(), 1);
    drain(sch, seqs);
    EXPECT_NE(sch.submit(make_request(9, 5, 3, 0.0f)), nullptr);  // room again
    EXPECT_THROW(sch.submit(make_request(1, 64, 3, 0.0f)), Error);  // no room for an answer
    EXPECT_THROW(sch.submit(make_request(1, 0, 3, 0.0f)), Error);
    EXPECT_THROW(sch.submit(make_request(1, 4, 0, 0.0f)), Error);
}

TEST(Scheduler, ReusesThePromptPrefixItsSlotHoldsWithTheSameResult) {
    const GenRequest first = make_request(3, 40, 10, 0.0f);
    GenRequest second = make_request(4, 15, 10, 0.0f);
    second.prompt.insert(second.prompt.begin(), first.prompt.begin(), first.prompt.end());
    Pipeline p(2, 2, 128);
    Scheduler sch(p.engine(), options(2, 16, 128));
    drain(sch, {sch.submit(first)});
    auto s = sch.submit(second);
    const Outcome got = drain(sch, {s})[0];
    EXPECT_EQ(s->n_reused(), 40);
    EXPECT_EQ(sch.stats().prompt_tokens_reused, 40u);
    Pipeline q(2, 2, 128);
    SchedulerOptions o = options(2, 16, 128);
    o.reuse_prefix = false;
    Scheduler plain(q.engine(), o);
    drain(plain, {plain.submit(first)});
    auto t = plain.submit(second);
    EXPECT_EQ(got, drain(plain, {t})[0]);
    EXPECT_EQ(t->n_reused(), 0);
}

TEST(Scheduler, StopsAtEndOfGenerationMaxTokensAndTheContext) {
    Pipeline p(2, 2, 32);
    // Greedy from this prompt, with the first generated token declared end-of-generation.
    GenRequest r = make_request(11, 6, 5, 0.0f);
    SchedulerOptions o = options(2, 16, 32);
    Scheduler probe(p.engine(), o);
    const Outcome free_run = drain(probe, {probe.submit(r)})[0];
    ASSERT_EQ(free_run.tokens.size(), 5u);
    o.eog = {free_run.tokens[2]};
    Scheduler sch(p.engine(), o);
    r.ignore_eos = false;
    const Outcome stopped = drain(sch, {sch.submit(r)})[0];
    EXPECT_EQ(stopped.finish, Finish::kStop);
    const auto first_eog = std::find(free_run.tokens.begin(), free_run.tokens.end(), o.eog[0]);
    EXPECT_EQ(stopped.tokens, std::vector<int32_t>(free_run.tokens.begin(), first_eog));  // the eog id is not handed out
    // 30 prompt tokens in a 32-token context: the 1st sampled token is fed at position 30, the
    // 2nd at 31, and the 3rd has no position left.
    const Outcome full = drain(sch, {sch.submit(make_request(12, 30, 100, 0.0f))})[0];
    EXPECT_EQ(full.finish, Finish::kLength);
    EXPECT_EQ(full.tokens.size(), 3u);
}

}  // namespace
}  // namespace pipelm::pipeline
