// The command line as a new user meets it (issue 19 §2): every numeric flag is range-checked at
// parse time with one error line naming the flag, its range and the fix (before, `-n 0` printed a
// negative t/s and exited 0, `-n 4294967296` became 0, `--threads 4294967297` ran with one thread,
// `--temp nan` and `--top-p 2` were accepted and `--connect-timeout -1` became 0 s); llama.cpp's
// spellings work where they mean the same; typos get "did you mean"; `--seed -1` is a random seed
// that is printed so the run can be repeated.
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

#include "runtime/model/mkmodel.h"
#include "tests/runtime/cli_test_util.h"
#include "tests/runtime/gguf_test_util.h"

namespace pipelm {
namespace {

using namespace cli_test;

constexpr const char* kTempPrefix = "pipelm-cli-flags";

class CliFlags : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new TempDir(kTempPrefix);
        model_ = dir_->path("tiny.gguf");
        model::mkmodel_write(tiny_spec(), model_, 1);
    }
    static void TearDownTestSuite() {
        delete dir_;
        dir_ = nullptr;
    }
    RunResult pipelm(const std::vector<std::string>& args) { return run_pipelm(args, tmp_.dir(), 60); }
    ::testing::AssertionResult refused(const std::vector<std::string>& args, const std::vector<std::string>& words) {
        return clean_error(pipelm(args), tmp_.dir(), kExitInvalidArgument, words);
    }

    TempDir tmp_{kTempPrefix};
    static TempDir* dir_;
    static std::string model_;
};
TempDir* CliFlags::dir_ = nullptr;
std::string CliFlags::model_;

// Each value used to be accepted (wrapped, truncated, NaN or out of the parameter's domain).
TEST_F(CliFlags, NumericValuesOutOfRangeAreRefusedNamingTheFlag) {
    struct Case {
        std::vector<std::string> args;
        std::vector<std::string> words;
    };
    const std::vector<Case> cases = {
        {{"run", "-m", model_, "-n", "0"}, {"--n-predict", "0", "1 to"}},
        {{"run", "-m", model_, "-n", "-3"}, {"--n-predict", "-3"}},
        {{"run", "-m", model_, "-n", "4294967296"}, {"--n-predict", "4294967296"}},
        {{"run", "-m", model_, "-n", "2147483647"}, {"--n-predict", "2147483647"}},
        {{"run", "-m", model_, "-n", "99999999999999999999"}, {"--n-predict", "64 bits"}},
        {{"run", "-m", model_, "--threads", "4294967297"}, {"--threads", "4294967297", "1 to 1024"}},
        {{"run", "-m", model_, "-t", "0"}, {"--threads", "0", "1 to 1024"}},
        {{"run", "-m", model_, "--top-p", "2"}, {"--top-p", "0 to 1"}},
        {{"run", "-m", model_, "--top-k", "-5"}, {"--top-k", "-5"}},
        {{"run", "-m", model_, "--temp", "nan"}, {"--temp", "finite"}},
        {{"run", "-m", model_, "--min-p", "inf"}, {"--min-p", "finite"}},
        {{"run", "-m", model_, "--repeat-penalty", "0"}, {"--repeat-penalty", "0"}},
        {{"run", "-m", model_, "--connect-timeout", "nan"}, {"--connect-timeout", "finite"}},
        {{"run", "-m", model_, "--connect-timeout", "1e300"}, {"--connect-timeout", "1e300", "seconds"}},
        {{"run", "-m", model_, "--connect-timeout", "-1"}, {"--connect-timeout", "-1"}},
        {{"run", "-m", model_, "--seed", "-2"}, {"--seed", "-2", "-1 = a random seed"}},
        {{"perplexity", "-m", model_, "-f", model_, "--chunks", "-1"}, {"--chunks", "-1", "1 to"}},
        {{"perplexity", "-m", model_, "-f", model_, "--chunks", "0"}, {"--chunks", "0"}},
        {{"bench", "-m", model_, "-r", "0"}, {"--repetitions", "0"}},
        {{"logits", "-m", model_, "--ubatch", "0", "--tokens", "1"}, {"--ubatch", "0"}},
        {{"logits", "-m", model_, "--stages", "-1", "--tokens", "1"}, {"--stages", "-1"}},
        {{"logits", "-m", model_, "--ctx", "1.5", "--tokens", "1"}, {"--ctx", "not an integer"}},
        {{"mkmodel", "--layers", "0", "-o", "x.gguf"}, {"--layers", "0"}},
    };
    for (const auto& c : cases) {
        std::string line;
        for (const auto& a : c.args) line += a + " ";
        EXPECT_TRUE(refused(c.args, c.words)) << line;
    }
}

TEST_F(CliFlags, TokenListWithAnEmptyEntryIsRefused) {
    // "1,,2" used to skip the empty entry and run on 1,2.
    for (const char* list : {"1,,2", ",1", "1,2,"})
        EXPECT_TRUE(refused({"logits", "-m", model_, "--tokens", list, "--out", tmp_.path("x")}, {"--tokens"})) << list;
    const RunResult ok = pipelm({"logits", "-m", model_, "--tokens", "1, 2 ,3", "--out", tmp_.path("y")});
    EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(CliFlags, TyposGetTheClosestNameAndLlamaCppNamesPointToOurs) {
    EXPECT_TRUE(refused({"run", "-m", model_, "--thread", "2"}, {"--thread", "did you mean --threads?"}));
    EXPECT_TRUE(refused({"bench", "-m", model_, "--sequence", "2"}, {"did you mean --sequences?"}));
    const RunResult cmd = pipelm({"rnu"});
    EXPECT_EQ(cmd.exit_code, kExitInvalidArgument);
    EXPECT_NE(cmd.err.find("unknown command 'rnu' (did you mean run?)"), std::string::npos) << cmd.err;
    for (const char* f : {"-ngl", "--n-gpu-layers", "-ts", "-sm"})
        EXPECT_TRUE(refused({"run", "-m", model_, f, "1"}, {f, "llama.cpp", "--split"})) << f;
    EXPECT_TRUE(refused({"run", "-m", model_, "--ctx-size", "0"}, {"--ctx-size (--ctx)", "0"}));
    EXPECT_TRUE(refused({"run", "-m", model_, "--threads-batch", "2", "-t", "1"}, {"--threads-batch", "--threads only"}));
}

TEST_F(CliFlags, LlamaCppSpellingsRunAsTheirPipelmFlags) {
    const std::string a = tmp_.path("a.bin"), b = tmp_.path("b.bin");
    const RunResult ours = pipelm({"logits", "-m", model_, "--tokens", "1,2,3", "--ctx", "64", "--ubatch", "2",
                                   "--threads", "1", "--out", a});
    ASSERT_EQ(ours.exit_code, 0) << ours.err;
    const RunResult theirs = pipelm({"logits", "-m", model_, "--tokens", "1,2,3", "--ctx-size", "64", "--ubatch-size",
                                     "2", "--threads-batch", "1", "-fa", "on", "--out", b});
    ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
    EXPECT_NE(theirs.err.find("always exact"), std::string::npos) << theirs.err;
    EXPECT_EQ(slurp(a), slurp(b));
}

TEST_F(CliFlags, SeedMinusOneIsRandomAndPrintedSoTheRunRepeats) {
    const RunResult r = pipelm({"run", "-m", model_, "--tokens", "1,2", "-n", "6", "--temp", "1", "--seed", "-1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.err, m, std::regex("seed: ([0-9]+) \\(give --seed \\1 to repeat"))) << r.err;
    const RunResult again = pipelm({"run", "-m", model_, "--tokens", "1,2", "-n", "6", "--temp", "1", "--seed", m[1]});
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(r.out, again.out);
    // The largest seed -1 can print (53 bits) is accepted back (63-bit seeds above --seed's
    // 9.2e18 were refused).
    const RunResult top = pipelm({"run", "-m", model_, "--tokens", "1,2", "-n", "2", "--temp", "1", "--seed", "9007199254740991"});
    EXPECT_EQ(top.exit_code, 0) << top.err;
}

}  // namespace
}  // namespace pipelm
