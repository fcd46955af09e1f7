// `pipelm perplexity` on glm4-demo's validation text against llama.cpp's numbers
// (shared/testdata/models/glm4-demo/README.md: F16 58.4652 ± 0.7462 over 174 windows of 256).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <regex>

#include "tests/testing/test_util.h"

namespace pipelm::testing {
namespace {

double grab(const std::string& text, const std::string& pattern) {
    std::smatch m;
    if (!std::regex_search(text, m, std::regex(pattern))) return -1;
    return std::atof(m[1].str().c_str());
}

const std::string kModel = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
const std::string kText = data_path("tokenizer/glm4-demo-valid.txt");

// Same windows, same scored positions as llama-perplexity; pipelm computes the F16 file with
// FP32 activations (llama.cpp rounds them to F16), so agreement to 0.1 % is expected (measured
// 58.4650 vs 58.4652).
TEST(Perplexity, DemoF16MatchesLlamaCpp) {
    const std::string base = temp_file("demo-f16.lp");
    const RunResult r = run_cmd(pipelm_cmd("perplexity -m " + kModel + " -f " + kText + " --save-logits " + base));
    ASSERT_EQ(r.status, 0) << r.output;
    const double ppl = grab(r.output, "perplexity: ([0-9.]+) \\+/-");
    const double se = grab(r.output, "perplexity: [0-9.]+ \\+/- ([0-9.]+)");
    EXPECT_NEAR(ppl, 58.4652, 58.4652 * 1e-3) << r.output;
    EXPECT_NEAR(se, 0.7462, 0.01) << r.output;
    EXPECT_NE(r.output.find("44370 tokens"), std::string::npos) << r.output;
    // KL divergence of a run against itself: 0 up to the float32 storage of the base
    // log-probabilities (|error| ~1e-7 per log-prob), full top-1 agreement.
    const RunResult k = run_cmd(pipelm_cmd("perplexity -m " + kModel + " -f " + kText + " --chunks 4 --kl-base " + base));
    ASSERT_EQ(k.status, 0) << k.output;
    EXPECT_LT(std::abs(grab(k.output, "KL divergence: mean ([-0-9.e+]+)")), 1e-8) << k.output;
    EXPECT_EQ(grab(k.output, "top-1 agreement: ([0-9.]+)"), 1.0) << k.output;
    std::remove(base.c_str());
}

TEST(Perplexity, BadInputsAreRefused) {
    RunResult r = run_cmd(pipelm_cmd("perplexity -m " + kModel + " -f /nonexistent/text.txt"));
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.output.find("/nonexistent/text.txt"), std::string::npos) << r.output;
    const std::string small = temp_file("small.txt");
    { std::ofstream(small) << "too short"; }
    r = run_cmd(pipelm_cmd("perplexity -m " + kModel + " -f " + small));
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.output.find("fewer than one window"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace pipelm::testing
