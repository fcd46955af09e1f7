// The pipeline simulator (runtime/pipeline/simulator.h) against closed forms: one stage is the
// sum of its ubatches; two stages with one sequence gain nothing (the bubble) and with two
// sequences twice the rate; a slow link caps a prompt at rate / bytes per token; a token bucket
// lets a small message through at once; stages on one host share its read bandwidth and cores;
// the compute fit recovers its parameters; and `pipelm simulate` refuses what it cannot use. Times are exact in the model (no noise): the tolerances
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
    // Each 1448 bytes of a message take a 1514-byte frame (TCP/IP/Ethernet headers).
    const double wire = 8192 * 1514.0 / 1448.0;
    EXPECT_NEAR(pp.tps(), 1.25e6 / wire, 0.02 * 1.25e6 / wire);
    EXPECT_LT(pp.busy_s[0] / pp.seconds, 0.1);
    m.wire_per_byte = 1;  // payload bytes only
    EXPECT_NEAR(simulate_prompt(m, 64 * 64, 64).tps(), 1.25e6 / 8192, 0.02 * 1.25e6 / 8192);
}

TEST(Simulator, ATokenBucketLetsASmallMessageThroughAtOnce) {
    SimModel m = model(2, 10, 1);
    m.link_bps = 10e6;
    m.header_bytes = 0;
    const double plain = simulate_decode(m, 1, 16, 1, 64).itl.at(3);
    m.link_burst_bytes = 16384;  // refills 8 KiB in 6.5 ms, less than the 11 ms per token
    const double bucket = simulate_decode(m, 1, 16, 1, 64).itl.at(3);
    EXPECT_NEAR(plain, 0.011 + (8192 + 64) * 1514.0 / 1448.0 * 8 / 10e6, 1e-6);  // hidden states out, 64-byte result back
    EXPECT_NEAR(bucket, 0.011, 1e-6);
}

TEST(Simulator, StagesOnOneHostShareItsReadBandwidthAndCores) {
    // The fit says 0.5 x (10 + n) ms per ubatch on each of 2 stages; one stage alone reads at
    // 10 GB/s, the whole host at 15.
    SimModel m = model(2, 10, 1);
    m.stage_read_Bps = 10e9;
    m.host_read_Bps = 15e9;
    // Each stage on a host of its own: 6 ms per ubatch of 2, 2 groups of 2 keep both busy.
    EXPECT_NEAR(simulate_decode(m, 4, 64, 1, 64).tps(), 4 / 0.012, 0.02 * 4 / 0.012);
    m.host = {0, 0};
    // One host: both stages read at once, each at 7.5 GB/s: the fixed part takes 4/3 as long,
    // 0.5 x (10 x 4/3 + 2) = 7.67 ms per ubatch.
    const double t4 = 0.5 * (0.010 * 4 / 3 + 0.002);
    EXPECT_NEAR(simulate_decode(m, 4, 64, 1, 64).tps(), 4 / (2 * t4), 0.02 * 4 / (2 * t4));
    // One sequence: the stages take turns and each reads alone: no loss.
    EXPECT_NEAR(simulate_decode(m, 1, 64, 1, 64).tps(), 1 / 0.011, 1e-6);
    // A prompt of 4 ubatches keeps both reading: 0.5 x (10 x 4/3 + 64) ms per half.
    EXPECT_NEAR(simulate_prompt(m, 256, 64).seconds, 5 * 0.5 * (0.010 * 4 / 3 + 0.064), 1e-12);

    // Cores: both stages on a 1-core host, no bandwidth limit: computing together they take turns.
    SimModel c = model(2, 10, 1);
    c.host = {0, 0};
    c.host_cores = 1;
    EXPECT_NEAR(simulate_decode(c, 4, 64, 1, 64).tps(), 4 / 0.024, 0.02 * 4 / 0.024);  // 2 x 6 ms per ubatch
    EXPECT_NEAR(simulate_decode(c, 1, 64, 1, 64).tps(), 1 / 0.011, 1e-6);               // one at a time: no loss
    c.host_cores = 2;
    EXPECT_NEAR(simulate_decode(c, 4, 64, 1, 64).tps(), 4 / 0.012, 0.02 * 4 / 0.012);
}

// Host time per message (SimModel::msg_cpu_s): on an idle host it adds to every hop like latency;
// on a host whose cores are taken it is stretched as compute is, so it costs throughput.
TEST(Simulator, HostTimePerMessageIsLatencyWhenIdleAndThroughputWhenBusy) {
    SimModel m = model(2, 10, 1);
    m.msg_cpu_s = 0.001;
    // One sequence: one message to stage 1 and the result back per token.
    EXPECT_NEAR(simulate_decode(m, 1, 64, 1, 64).itl.at(5), 0.011 + 2 * 0.001, 1e-9);
    SimModel l = model(2, 10, 1);
    l.link_latency_s = 0.001;
    EXPECT_NEAR(simulate_decode(l, 1, 64, 1, 64).itl.at(5), 0.011 + 2 * 0.001, 1e-9);
    // 8 stages on one 2-core host, 8 sequences in 8 groups of 1 token: all 8 stages compute at
    // once, so each runs 4x slower than alone: 4 x 11 / 8 = 5.5 ms per ubatch, a group's path is
    // 8 x 5.5 = 44 ms and 8 tokens come per path.
    SimModel busy = model(8, 10, 1);
    busy.host.assign(8, 0);
    busy.host_cores = 2;
    EXPECT_NEAR(simulate_decode(busy, 8, 64, 1, 64).tps(), 8 / 0.044, 0.02 * 8 / 0.044);
    // Latency lengthens each path by its 9 messages (8 hops and the result) ...
    SimModel lat = busy;
    lat.link_latency_s = 0.0005;
    EXPECT_NEAR(simulate_decode(lat, 8, 64, 1, 64).tps(), 8 / (0.044 + 9 * 0.0005), 0.02 * 8 / 0.0485);
    // ... host time per message is stretched 4x like compute, on every stage (stage 0 takes in
    // the results): 8 x (5.5 + 4 x 0.5) = 60 ms per path.
    SimModel cpu = busy;
    cpu.msg_cpu_s = 0.0005;
    EXPECT_NEAR(simulate_decode(cpu, 8, 64, 1, 64).tps(), 8 / 0.060, 0.02 * 8 / 0.060);
}

// Host time per byte sent (SimModel::byte_cpu_s): the sender pays it after the ubatch's compute,
// while the message is on its way: a prompt's stage 0 (the coordinator, which submits every
// ubatch) is held back by it; a one-sequence token path is not while the next stage computes
// longer than the sender sends.
TEST(Simulator, HostTimePerByteDelaysTheSender) {
    SimModel m = model(2, 10, 1);
    m.bytes_per_token = 1000;
    m.header_bytes = 0;
    m.result_bytes = 0;
    m.byte_cpu_s = 1e-6;  // 1 ms per 1000-byte token
    EXPECT_NEAR(simulate_decode(m, 1, 64, 1, 64).itl.at(5), 0.011, 1e-9);
    // A prompt of 4 ubatches of 64 tokens: stage 0 computes 37 ms and sends 64 ms per ubatch,
    // stage 1 computes 37 ms: stage 0 sets the pace, 4 x 101 ms.
    const SimResult r = simulate_prompt(m, 256, 64);
    EXPECT_NEAR(r.seconds, 4 * 0.101, 1e-9);
    EXPECT_NEAR(r.busy_s.at(0), 4 * 0.101, 1e-9);
    EXPECT_NEAR(r.host_s.at(0), 4 * 0.064, 1e-9) << "the host time is counted apart from compute";
    EXPECT_NEAR(r.host_s.at(1), 0, 1e-12);
}

TEST(Simulator, FitRecoversPassAndTokenTimes) {
    double a = 0, b = 0;
    ASSERT_TRUE(fit_compute({{1, 0.0110}, {4, 0.0140}, {64, 0.0740}}, a, b));
    EXPECT_NEAR(a, 0.010, 1e-9);
    EXPECT_NEAR(b, 0.001, 1e-9);
    EXPECT_FALSE(fit_compute({{4, 0.014}, {4, 0.015}}, a, b)) << "one ubatch size cannot separate the two";
}

// Segments through the calibration's ubatch sizes: each measured size costs what it measured,
// sizes between two are on their line, sizes beyond the last on the last line; a segment whose
// line would start below 0 (noise between close sizes) keeps the least-squares pair.
TEST(Simulator, ComputeSegmentsGoThroughEveryMeasuredSize) {
    // 1 token 7 ms, 4 tokens 8.5 ms (two measurements), 32 tokens 40 ms.
    const auto segs = compute_segments({{1, 0.007}, {4, 0.0084}, {4, 0.0086}, {32, 0.040}}, 0.005, 0.0011);
    ASSERT_EQ(segs.size(), 2u);
    SimModel m = model(1, 5, 1.1);
    m.segments = segs;
    EXPECT_NEAR(simulate_decode(m, 1, 64, 1, 64).itl.at(3), 0.007, 1e-12);
    EXPECT_NEAR(simulate_decode(m, 4, 64, 1, 64).itl.at(3), 0.0085, 1e-12);
    EXPECT_NEAR(simulate_prompt(m, 32, 32).seconds, 0.040, 1e-12);
    EXPECT_NEAR(simulate_prompt(m, 18, 18).seconds, 0.0085 + 14 * (0.040 - 0.0085) / 28, 1e-12);
    EXPECT_NEAR(simulate_prompt(m, 64, 64).seconds, 0.040 + 32 * (0.040 - 0.0085) / 28, 1e-12);
    // 4 tokens measured faster than 1 would give a negative time per token: the fit's pair.
    const auto noisy = compute_segments({{1, 0.009}, {4, 0.008}, {32, 0.040}}, 0.005, 0.0011);
    ASSERT_EQ(noisy.size(), 2u);
    EXPECT_DOUBLE_EQ(noisy[0].pass_s, 0.005);
    EXPECT_DOUBLE_EQ(noisy[0].token_s, 0.0011);
    EXPECT_TRUE(compute_segments({{4, 0.008}, {4, 0.009}}, 0.005, 0.0011).empty());
}

TEST(SimulateCommand, PredictsAndRefusesWhatItCannotUse) {
    using pipelm::testing::pipelm_cmd;
    using pipelm::testing::run_cmd;
    const std::string tiny = pipelm::testing::data_path("models/glm4-tiny/model.gguf");
    auto r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --pass-ms 10 --token-ms 1 --stages 1,2 -p 128 -n 8 "
                                "--sequences 1,2 -ub 64 --link-rate inf -o jsonl"));
    ASSERT_EQ(r.status, 0) << r.output;
    // 1 stage: 2 ubatches of 74 ms; 2 stages: stage 0's share of the first ubatch, then both
    // halves at once, then stage 1's share of the second, plus the default 50 us latency on the
    // two links: 74 x (1 + share 1) + 0.1 ms, with the shares of the split bench runs (--split
    // auto: the lm_head gives stage 1 50.1 % of glm4-tiny's compute): 111.19 ms
    std::map<int64_t, double> pp128_tps;  // stages -> t/s
    std::stringstream lines(r.output);
    for (std::string l; std::getline(lines, l);) {
        if (l.empty() || l[0] != '{') continue;
        const auto row = nlohmann::json::parse(l);
        EXPECT_EQ(row.at("link_rate"), "inf") << l;
        EXPECT_EQ(row.at("ubatch"), 64) << l;
        if (row.at("test") == "pp128") pp128_tps[row.at("stages").get<int64_t>()] = row.at("tps").get<double>();
    }
    EXPECT_EQ(pp128_tps, (std::map<int64_t, double>{{1, 864.86}, {2, 1151.22}})) << r.output;
    // Two stages sharing a host that reads no faster than one stage: each ubatch's fixed part
    // takes twice as long, and decode that is all fixed part (token time 0) runs at half the rate
    // of two hosts. --host-bw without --stage-bw, or not a number, is refused.
    auto tps_of = [&](const std::string& flags) {
        r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --pass-ms 10 --token-ms 0 --stages 2 -p 0 -n 16 --sequences 4 "
                               "--link-rate inf --link-latency-us 0 -o jsonl " + flags));
        EXPECT_EQ(r.status, 0) << r.output;
        const size_t at = r.output.find('{');
        return at == std::string::npos ? 0.0 : nlohmann::json::parse(r.output.substr(at, r.output.find('\n', at) - at)).at("tps").get<double>();
    };
    const double own = tps_of("--host-bw 20 --stage-bw 20"), shared = tps_of("--stages-per-host all --host-bw 20 --stage-bw 20");
    EXPECT_NEAR(shared / own, 0.5, 0.02) << "two stages reading at once on one host get half the bandwidth each";
    for (const char* bad : {"--host-bw 40", "--host-bw fast --stage-bw 20", "--host-bw 40 --stage-bw 0", "--stages-per-host 0",
                            "--stages-per-host some", "--host-cores -1"}) {
        r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --pass-ms 1 --token-ms 1 " + std::string(bad)));
        EXPECT_EQ(r.status, 2) << bad << ": " << r.output;
    }
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

// --msg-cpu-us fit: the host time per message that gives the calibration's 2-stage one-sequence
// decode row its time outside compute (wall less the stages' busy time; the row's own compute
// speed drops out). 1 stage: 10 ms per ubatch + 1 ms per token; the 2-stage row at 13 ms per token
// with 11 ms busy: 2 messages (to stage 1, the result back) of 1 ms. --byte-cpu-ns fit: the host
// time per byte sent that gives the 2-stage prompt row its t/s.
TEST(SimulateCommand, FitsTheHostTimePerMessageAndPerByteToMultiStageRows) {
    using pipelm::testing::pipelm_cmd;
    using pipelm::testing::run_cmd;
    const std::string tiny = pipelm::testing::data_path("models/glm4-tiny/model.gguf");
    auto row = [](int stages, const std::string& test, int np, int ng, int k, double tps, std::vector<double> busy) {
        return nlohmann::json{{"stages", stages}, {"test", test}, {"n_prompt", np}, {"n_gen", ng}, {"n_seq", k},
                              {"ubatch", 64}, {"tps", tps}, {"busy_pct", busy},
                              {"link_rate", stages > 1 ? "inf" : "none"}}.dump() + "\n";
    };
    const std::string one = row(1, "pp64", 64, 0, 1, 64 / 0.074, {100}) + row(1, "tg16@1seq", 1, 16, 1, 1 / 0.011, {100}) +
                            row(1, "tg16@4seq", 1, 16, 4, 4 / 0.014, {100});
    // 13 ms per token, 11 of them computing (5.5 on each stage): 2 ms outside. The compute of
    // the row itself may differ from the calibration's: only the time outside it counts.
    const std::string decode = row(2, "tg16@1seq", 1, 16, 1, 1 / 0.013, {100 * 5.5 / 13, 100 * 5.5 / 13});
    const std::string calib = pipelm::testing::temp_file("fit-calib.jsonl");
    std::ofstream(calib) << one << decode;
    const std::string shape = " --link-latency-us 0 --link-rate inf --stages 2 -p 0 -n 16 --sequences 1 -o jsonl";
    auto r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib + " --msg-cpu-us fit" + shape));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("simulate: 1000 us of host time per message, fitted to the 2-stage tg16@1seq row at inf "
                            "(2.000 ms per token outside compute)"),
              std::string::npos) << r.output;
    auto tps = [](const std::string& out) {
        const size_t at = out.find('{');
        return at == std::string::npos ? -1.0
                                       : nlohmann::json::parse(out.substr(at, out.find('\n', at) - at)).at("tps").get<double>();
    };
    EXPECT_NEAR(tps(r.output), 1 / 0.013, 0.01) << r.output << "the fitted model gives back the row it was fitted to";
    std::ofstream(calib) << one << row(2, "tg16@1seq", 1, 16, 1, 1 / 0.020, {100 * 9 / 20.0, 100 * 9 / 20.0});
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib + " --msg-cpu-us fit" + shape));
    EXPECT_NE(r.output.find("simulate: 1000 us of host time per message"), std::string::npos)
        << r.output << "a slower row with the same 2 ms outside compute gives the same fit";

    // A 2-stage prompt of 4 ubatches of 64 tokens: 185.26 ms in the model with no host time per
    // byte (1381.86 t/s); the row's 1282.73 t/s is what 300 ns per byte gives (glm4-tiny: 64 x 256
    // + 96 bytes per ubatch, stage 0 setting the pace).
    std::ofstream(calib) << one << decode << row(2, "pp256", 256, 0, 1, 1282.73, {84, 74});
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib +
                           " --msg-cpu-us 0 --byte-cpu-ns fit --link-latency-us 0 --link-rate inf --stages 2 -p 256 -n 0 -o jsonl"));
    ASSERT_EQ(r.status, 0) << r.output;
    const size_t ns_at = r.output.find(" ns of host time per byte sent, fitted to the 2-stage pp256 row at inf (1282.73 t/s)");
    ASSERT_NE(ns_at, std::string::npos) << r.output;
    EXPECT_NEAR(std::stod(r.output.substr(r.output.rfind(' ', ns_at - 1) + 1)), 300.0, 0.2) << r.output;
    EXPECT_NEAR(tps(r.output), 1282.73, 0.01) << r.output;
    // Both at once: each holds the other; the decode row's 8-byte token message adds little.
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib + " --msg-cpu-us fit --byte-cpu-ns fit" + shape));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NEAR(tps(r.output), 1 / 0.013, 0.01) << r.output;

    // No multi-stage row, a row with less time outside compute than the model's, a link-bound
    // prompt row, no --calib: refused.
    std::ofstream(calib) << one;
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib + " --msg-cpu-us fit"));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("no decode row of one sequence over 2 or more stages"), std::string::npos) << r.output;
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib + " --byte-cpu-ns fit"));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("no prompt row over 2 or more stages"), std::string::npos) << r.output;
    std::ofstream(calib) << one << row(2, "tg16@1seq", 1, 16, 1, 1 / 0.013, {50, 49.9});
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib + " --msg-cpu-us fit --link-latency-us 1000"));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("less than the model with no host time per message"), std::string::npos) << r.output;
    std::string slow = one + row(2, "pp256", 256, 0, 1, 256 / 0.5, {20, 20});
    slow.replace(slow.rfind("\"inf\""), 5, "\"1mbit\"");
    std::ofstream(calib) << slow;
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --calib " + calib + " --byte-cpu-ns fit"));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("at 1mbit is link-bound"), std::string::npos) << r.output;
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --pass-ms 1 --token-ms 1 --msg-cpu-us fit"));
    EXPECT_EQ(r.status, 2) << r.output;
    r = run_cmd(pipelm_cmd("simulate -m " + tiny + " --pass-ms 1 --token-ms 1 --byte-cpu-ns -3"));
    EXPECT_EQ(r.status, 2) << r.output;
}

}  // namespace
}  // namespace pipelm::pipeline
