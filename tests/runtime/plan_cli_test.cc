// `pipelm plan` as a user runs it (issue 16 §6): a model shape without a file (--preset, --dtype),
// the fit margin against --mem, the bytes a link carries per token, a split found under --mem
// where the unconstrained one does not fit, a one-line refusal naming the smallest budget, and
// one stage per rank under mpirun (the launcher's environment variables stand in for mpirun).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "tests/runtime/cli_test_util.h"
#include "tests/runtime/gguf_test_util.h"

namespace pipelm {
namespace {

using namespace cli_test;

constexpr const char* kTempPrefix = "pipelm-plan-cli";

class PlanCli : public ::testing::Test {
protected:
    RunResult pipelm(const std::vector<std::string>& args) { return run_pipelm(args, tmp_.dir(), 60); }
    TempDir tmp_{kTempPrefix};
};

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// GLM-4-32B's shape from the preset, 4 stages, sizes from the weight table: the stage table,
// margins against --mem and the link line (6144 x 4 bytes f32, 2 bytes bf16).
TEST_F(PlanCli, PresetWithoutAFileShowsMemoryMarginAndLinkBytes) {
    const RunResult r = pipelm({"plan", "--preset", "glm4-32b", "--dtype", "q4_k_m", "--stages", "4", "--mem", "5300M"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(has(r.out, "61 layers, hidden 6144, heads 48/2")) << r.out;
    EXPECT_TRUE(has(r.out, "0-14 (15)")) << r.out;
    EXPECT_TRUE(has(r.out, "5300.0")) << r.out;
    EXPECT_TRUE(has(r.out, "24576 bytes per token")) << r.out;
    EXPECT_TRUE(has(r.out, "pipelm simulate --embd 6144")) << r.out;
    const RunResult b = pipelm({"plan", "--preset", "glm4-9b", "--stages", "2", "--wire", "bf16"});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    EXPECT_TRUE(has(b.out, "8192 bytes per token")) << b.out;
    EXPECT_TRUE(clean_error(pipelm({"plan", "--preset", "glm4-99b"}), tmp_.dir(), kExitInvalidArgument, {"--preset"}));
    EXPECT_TRUE(clean_error(pipelm({"plan", "--preset", "glm4-9b", "--dtype", "q3_x"}), tmp_.dir(), kExitInvalidArgument,
                            {"q3_x"}));
}

// GLM-4-9B Q4_K_M over 4 stages: 10,10,10,10 needs 1869.6 MiB on the last stage; at 1600M a split
// that fits exists (9,12,12,7) and is taken; below 1572.5 MiB none does and the error says so.
TEST_F(PlanCli, MemFindsAFittingSplitOrNamesTheSmallestBudget) {
    const RunResult r = pipelm({"plan", "--preset", "glm4-9b", "--dtype", "q4_k_m", "--stages", "4", "--mem", "1600M"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(has(r.out, "0-8 (9)")) << r.out;
    EXPECT_FALSE(has(r.out, "   -")) << r.out;  // every stage has a margin, none negative
    EXPECT_TRUE(clean_error(pipelm({"plan", "--preset", "glm4-9b", "--dtype", "q4_k_m", "--stages", "4", "--mem", "1500M"}),
                            tmp_.dir(), kExitMemory, {"--mem", "1572.5 MiB"}));
}

// Under mpirun the rank count is the stage count (as in run); only rank 0 prints.
TEST_F(PlanCli, MpirunRanksSetTheStageCount) {
    ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    ::setenv("OMPI_COMM_WORLD_RANK", "0", 1);
    const RunResult r0 = pipelm({"plan", "--preset", "glm4-9b"});
    ::setenv("OMPI_COMM_WORLD_RANK", "1", 1);
    const RunResult r1 = pipelm({"plan", "--preset", "glm4-9b"});
    // An error of the command line is every rank's: rank 0 prints it, the others exit with its code.
    const RunResult bad1 = pipelm({"plan", "--preset", "glm4-9b", "--stages", "3"});
    ::setenv("OMPI_COMM_WORLD_RANK", "0", 1);
    const RunResult bad = pipelm({"plan", "--preset", "glm4-9b", "--stages", "3"});
    ::unsetenv("OMPI_COMM_WORLD_SIZE");
    ::unsetenv("OMPI_COMM_WORLD_RANK");
    ASSERT_EQ(r0.exit_code, 0) << r0.err;
    EXPECT_TRUE(has(r0.out, "    1  cpu")) << r0.out;
    EXPECT_TRUE(has(r0.out, "over each of the 1 links")) << r0.out;
    EXPECT_EQ(r1.exit_code, 0) << r1.err;
    EXPECT_EQ(r1.out, "");
    EXPECT_TRUE(clean_error(bad, tmp_.dir(), kExitInvalidArgument, {"--stages", "mpirun"}));
    EXPECT_EQ(bad1.exit_code, kExitInvalidArgument);
    EXPECT_EQ(bad1.err, "");
}

}  // namespace
}  // namespace pipelm
