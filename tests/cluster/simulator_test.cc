// The pipeline simulator (runtime/pipeline/simulator.h) against closed forms: one stage is the
// sum of its ubatches; two stages with one sequence gain nothing (the bubble) and with two
// sequences twice the rate; a slow link caps a prompt at rate / bytes per token; a token bucket
// lets a small message through at once; the compute fit recovers its parameters; and `pipelm
// simulate` refuses what it cannot use. Times are exact in the model (no noise): the tolerances
// only cover the fill and drain of the pipeline.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/pipeline/simulator.h"
#include "tests/testing/test_util.h"

namespace pipelm::pipeline {
namespace {

SimModel model(int stages, double pass_ms, double token_ms) {
    SimModel m;
    m.pass_s = pass_ms * 1e-3;
    m.token_s = token_ms * 1e-3;
    m.share.assign(stages, 1.0 / stages);
    m.bytes_per_token = 8192;
    return m;
}

TEST(Simulator, OneStageIsTheSumOfItsUbatches) {
    const SimModel m = model(1, 10, 1);
    const SimResult pp = simulate_prompt(m, 256, 64);
    EXPECT_NEAR(pp.seconds, 4 * (0.010 + 64 * 0.001), 1e-12);
    EXPECT_EQ(pp.tokens, 256);
    EXPECT_NEAR(pp.busy_s[0], pp.seconds, 1e-12);
    const SimResult tg = simulate_decode(m, 1, 32, 1, 64);
    EXPECT_NEAR(tg.seconds, 32 * 0.011, 1e-12);
    EXPECT_EQ(tg.tokens, 32);
    ASSERT_EQ(tg.itl.size(), 31u);
    EXPECT_NEAR(tg.itl[5], 0.011, 1e-12);
}

TEST(Simulator, TwoStagesOverlapThePromptsUbatches) {
    // 4 ubatches of 64: 37 ms per half; stage 1 runs ubatch k while stage 0 runs k+1.
    const SimResult pp = simulate_prompt(model(2, 10, 1), 256, 64);
    EXPECT_NEAR(pp.seconds, 5 * 0.037, 1e-12);
    EXPECT_NEAR(pp.busy_s[1], 4 * 0.037, 1e-12);
}

TEST(Simulator, TwoStagesShowTheBubbleAtOneSequenceAndFillItWithTwo) {
    const SimModel m = model(2, 10, 1);  // no link time
    const SimResult one = simulate_decode(m, 1, 64, 1, 64);
    EXPECT_NEAR(one.tps(), 1 / 0.011, 1e-6) << "one sequence: each token through both halves in turn";
    EXPECT_NEAR(one.busy_s[0] / one.seconds, 0.5, 1e-9);
    const SimResult two = simulate_decode(m, 2, 64, 1, 64);
    EXPECT_NEAR(two.tps(), 2 / 0.011, 0.02 * 2 / 0.011) << "two groups in flight: both stages busy";
    EXPECT_GT(two.busy_s[1] / two.seconds, 0.97);
    const SimResult four = simulate_decode(model(1, 10, 1), 4, 64, 1, 64);
    EXPECT_NEAR(four.tps(), 4 / 0.014, 1e-6) << "one stage: one ubatch of 4";
}

TEST(Simulator, ASlowLinkCapsAPromptAtRateOverBytesPerToken) {
    SimModel m = model(2, 1, 0.01);  // fast compute
    m.link_bps = 10e6;               // 1.25 MB/s
    m.header_bytes = 0;
    const SimResult pp = simulate_prompt(m, 64 * 64, 64);
    EXPECT_NEAR(pp.tps(), 1.25e6 / 8192, 0.02 * 1.25e6 / 8192);
    EXPECT_LT(pp.busy_s[0] / pp.seconds, 0.1);
}

TEST(Simulator, ATokenBucketLetsASmallMessageThroughAtOnce) {
    SimModel m = model(2, 10, 1);
    m.link_bps = 10e6;
    m.header_bytes = 0;
    const double plain = simulate_decode(m, 1, 16, 1, 64).itl.at(3);
    m.link_burst_bytes = 16384;  // refills 8 KiB in 6.5 ms, less than the 11 ms per token
    const double bucket = simulate_decode(m, 1, 16, 1, 64).itl.at(3);
    EXPECT_NEAR(plain, 0.011 + (8192 + 64) * 8 / 10e6, 1e-6);  // hidden states out, 64-byte result back
    EXPECT_NEAR(bucket, 0.011, 1e-6);
}

TEST(Simulator, FitRecoversPassAndTokenTimes) {
    double a = 0, b = 0;
    ASSERT_TRUE(fit_compute({{1, 0.0110}, {4, 0.0140}, {64, 0.0740}}, a, b));
    EXPECT_NEAR(a, 0.010, 1e-9);
    EXPECT_NEAR(b, 0.001, 1e-9);
    EXPECT_FALSE(fit_compute({{4, 0.014}, {4, 0.015}}, a, b)) << "one ubatch size cannot separate the two";
}

TEST(SimulateCommand, PredictsAndRefusesWhatItCannotUse) {
    using pipelm::testing::pipelm_cmd;
    using pipelm::testing::run_cmd;
    const std::string tiny = pipelm::testing::data_path("models/glm4-tiny/model.gguf");
    auto r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --pass-ms 10 --token-ms 1 --stages 1,2 -p 128 -n 8 "
                                "--sequences 1,2 -ub 64 --link-rate inf -o jsonl"));
    ASSERT_EQ(r.status, 0) << r.output;
    // 1 stage: 2 ubatches of 74 ms; 2 stages: 37 ms, then both halves at once, then 37 ms, plus
    // the default 50 us latency on the two links: 111.1 ms
    std::map<int64_t, double> pp128_tps;  // stages -> t/s
    std::stringstream lines(r.output);
    for (std::string l; std::getline(lines, l);) {
        if (l.empty() || l[0] != '{') continue;
        const auto row = nlohmann::json::parse(l);
        EXPECT_EQ(row.at("link_rate"), "inf") << l;
        EXPECT_EQ(row.at("ubatch"), 64) << l;
        if (row.at("test") == "pp128") pp128_tps[row.at("stages").get<int64_t>()] = row.at("tps").get<double>();
    }
    EXPECT_EQ(pp128_tps, (std::map<int64_t, double>{{1, 864.86}, {2, 1152.12}})) << r.output;
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --stages 2"));
    EXPECT_EQ(r.status, 2) << r.output;  // no compute model
    const std::string bad = pipelm::testing::temp_file("bad-calib.jsonl");
    std::ofstream(bad) << "{\"stages\": 1, \"tps\": \n";
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + bad));
    EXPECT_EQ(r.status, 3) << r.output;
    EXPECT_NE(r.output.find("line 1"), std::string::npos) << r.output;
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --pass-ms 1 --token-ms 1 --link-rate 10furlongs"));
    EXPECT_EQ(r.status, 2) << r.output;
}

}  // namespace
}  // namespace pipelm::pipeline
