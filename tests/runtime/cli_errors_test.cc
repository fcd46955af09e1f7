// The pipelm executable on malformed input: it must exit normally (no signal, no core) with a
// non-zero status and exactly one stderr line "error: ..." naming the file or flag at fault.
#include <dirent.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/gguf/gguf.h"
#include "runtime/gguf/gguf_writer.h"
#include "runtime/model/mkmodel.h"
#include "tests/runtime/cli_test_util.h"
#include "tests/runtime/gguf_test_util.h"

namespace pipelm {
namespace {

using namespace cli_test;

constexpr const char* kTempPrefix = "pipelm-cli-test";

class CliErrors : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new TempDir(kTempPrefix);
        good_ = dir_->path("good.gguf");
        model::mkmodel_write(tiny_spec(), good_, 1);
    }
    static void TearDownTestSuite() {
        delete dir_;
        dir_ = nullptr;
    }
    void SetUp() override { ASSERT_TRUE(std::filesystem::exists(PIPELM_BINARY)) << PIPELM_BINARY << " not built"; }

    TempDir tmp_{kTempPrefix};  // per test: working directory of the child and its files
    static TempDir* dir_;
    static std::string good_;
};
TempDir* CliErrors::dir_ = nullptr;
std::string CliErrors::good_;

TEST_F(CliErrors, TheValidModelWorks) {
    // The baseline: the same invocation as the error cases succeeds on the unmodified file.
    const std::string out = tmp_.path("logits.bin");
    const RunResult r = run_pipelm({"logits", "-m", good_, "--tokens", "1,2,3", "--out", out}, tmp_.dir());
    ASSERT_TRUE(r.exited) << r.err;
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(std::filesystem::file_size(out), 3u * 300u * 4u);
    EXPECT_EQ(r.err.find("error:"), std::string::npos) << r.err;
}

TEST_F(CliErrors, BadMagic) {
    std::vector<uint8_t> b = read_bytes(good_);
    std::memcpy(b.data(), "GGML", 4);
    const std::string bad = tmp_.path("bad-magic.gguf");
    write_bytes(bad, b);
    EXPECT_TRUE(clean_error(run_pipelm({"inspect", "-m", bad}, tmp_.dir()), tmp_.dir(), kExitFormat,
                            {bad, "not a GGUF file", "magic"}));
    EXPECT_TRUE(clean_error(run_pipelm({"logits", "-m", bad, "--tokens", "1", "--out", tmp_.path("x")}, tmp_.dir()),
                            tmp_.dir(), kExitFormat, {bad, "magic"}));
    EXPECT_FALSE(std::filesystem::exists(tmp_.path("x")));
}

TEST_F(CliErrors, TruncatedData) {
    std::vector<uint8_t> b = read_bytes(good_);
    b.resize(b.size() - 100);
    const std::string bad = tmp_.path("truncated.gguf");
    write_bytes(bad, b);
    EXPECT_TRUE(clean_error(run_pipelm({"logits", "-m", bad, "--tokens", "1", "--out", tmp_.path("x")}, tmp_.dir()),
                            tmp_.dir(), kExitFormat, {bad, "output.weight", "runs past the end", "truncated"}));
    EXPECT_TRUE(clean_error(run_pipelm({"inspect", "-m", bad}, tmp_.dir()), tmp_.dir(), kExitFormat, {bad, "truncated"}));
    // Cut inside the metadata.
    b.resize(1000);
    write_bytes(bad, b);
    EXPECT_TRUE(clean_error(run_pipelm({"run", "-m", bad, "-p", "hi", "-n", "1"}, tmp_.dir()), tmp_.dir(), kExitFormat,
                            {bad, "offset"}));
}

TEST_F(CliErrors, UnknownArchitecture) {
    const std::string bad = tmp_.path("llama7.gguf");
    {
        auto f = gguf::GgufFile::open(good_);
        gguf::GgufWriter w(static_cast<uint32_t>(f->alignment()));
        for (const auto& kv : f->metadata())
            w.set(kv.first, kv.first == "general.architecture" ? gguf::GgufWriter::make_string("llama7") : kv.second);
        for (const auto& t : f->tensors()) {
            const uint8_t* data = t.data;
            const uint64_t bytes = t.bytes;
            w.add_tensor(t.name, t.type, t.ne, [data, bytes](uint8_t* dst) { std::memcpy(dst, data, bytes); });
        }
        w.write(bad);
    }
    EXPECT_TRUE(clean_error(run_pipelm({"logits", "-m", bad, "--tokens", "1", "--out", tmp_.path("x")}, tmp_.dir()),
                            tmp_.dir(), kExitUnsupported, {bad, "unknown architecture 'llama7'", "glm4"}));
}

TEST_F(CliErrors, SplitThatDoesNotSumToTheLayers) {
    const std::string model = std::string(PIPELM_TEST_DATA) + "/models/glm4-tiny/model.gguf";
    if (!std::filesystem::exists(model)) GTEST_SKIP() << model << " not present";
    EXPECT_TRUE(clean_error(run_pipelm({"logits", "-m", model, "--stages", "2", "--split", "30,30", "--tokens", "1",
                                        "--out", tmp_.path("x")},
                                       tmp_.dir()),
                            tmp_.dir(), kExitInvalidArgument, {"--split", "sums to 60", "61"}));
    EXPECT_FALSE(std::filesystem::exists(tmp_.path("x")));
}

TEST_F(CliErrors, MissingModelPath) {
    const std::string missing = tmp_.path("no-such-model.gguf");
    EXPECT_TRUE(clean_error(run_pipelm({"logits", "-m", missing, "--tokens", "1", "--out", tmp_.path("x")}, tmp_.dir()),
                            tmp_.dir(), kExitIo, {missing, "cannot open"}));
    // A directory is read as a Hugging Face folder: without config.json it says what it lacks.
    EXPECT_TRUE(clean_error(run_pipelm({"inspect", "-m", tmp_.dir()}, tmp_.dir()), tmp_.dir(), kExitIo,
                            {tmp_.dir(), "config.json", "HF folder"}));
}

TEST_F(CliErrors, UnknownFlag) {
    EXPECT_TRUE(clean_error(run_pipelm({"logits", "-m", good_, "--bogus-flag", "--tokens", "1"}, tmp_.dir()), tmp_.dir(),
                            kExitInvalidArgument, {"--bogus-flag"}));
    EXPECT_TRUE(clean_error(run_pipelm({"inspect", "--bogus-flag"}, tmp_.dir()), tmp_.dir(), kExitInvalidArgument,
                            {"--bogus-flag"}));
    EXPECT_TRUE(clean_error(run_pipelm({"logits", "-m", good_, "--act-quant", "q4", "--tokens", "1"}, tmp_.dir()),
                            tmp_.dir(), kExitInvalidArgument, {"--act-quant", "q4", "none", "q8"}));
    EXPECT_TRUE(clean_error(run_pipelm({"inspect", "-m"}, tmp_.dir()), tmp_.dir(), kExitInvalidArgument, {"--model"}));
}

TEST_F(CliErrors, MkmodelFtypeAndDtypeTogether) {
    const std::string out = tmp_.path("x.gguf");
    EXPECT_TRUE(clean_error(run_pipelm({"mkmodel", "--ftype", "q4_k_m", "--dtype", "q8_0", "-o", out}, tmp_.dir()),
                            tmp_.dir(), kExitInvalidArgument, {"--ftype", "--dtype", "not both"}));
    EXPECT_TRUE(clean_error(run_pipelm({"mkmodel", "--ftype", "q4_k_xl", "-o", out}, tmp_.dir()), tmp_.dir(),
                            kExitInvalidArgument, {"--ftype", "q4_k_xl", "unknown", "q4_k_m", "iq4_xs", "q6_k"}));
    // A row the base type's 32-blocks cannot hold: embd 64 is fine for q4_0, attn_output's 2 x 20 is not.
    EXPECT_TRUE(clean_error(run_pipelm({"mkmodel", "--ftype", "q4_0", "--embd", "64", "--heads", "2", "--kv-heads", "1",
                                        "--head-dim", "20", "--rope-dim", "8", "-o", out},
                                       tmp_.dir()),
                            tmp_.dir(), kExitInvalidArgument, {"--ftype", "q4_0", "attn_output.weight", "40", "32"}));
    EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(CliErrors, MkmodelFtypeModelRuns) {
    // The baseline of the two above: a q4_k_m mix (hidden 256, so the K types apply) is written,
    // names its file type and runs.
    const std::string model = tmp_.path("q4km.gguf"), out = tmp_.path("logits.bin");
    RunResult r = run_pipelm({"mkmodel", "--preset", "small", "--layers", "2", "--vocab", "300", "--ffn", "416",
                              "--ftype", "q4_k_m", "-o", model},
                             tmp_.dir());
    ASSERT_TRUE(r.exited && r.exit_code == 0) << r.err;
    EXPECT_NE(r.err.find("ftype q4_k_m"), std::string::npos) << r.err;
    auto f = gguf::GgufFile::open(model);
    EXPECT_EQ(f->get("general.file_type").as_int(), 15);
    std::map<std::string, GgmlType> types;
    for (const auto& t : f->tensors()) types[t.name] = t.type;
    EXPECT_EQ(types["output.weight"], GgmlType::kQ6_K);
    EXPECT_EQ(types["blk.0.attn_q.weight"], GgmlType::kQ4_K);
    EXPECT_EQ(types["blk.0.ffn_down.weight"], GgmlType::kQ5_0);  // rows of 416: q4_K falls back
    EXPECT_EQ(types["blk.1.ffn_down.weight"], GgmlType::kQ8_0);  // q6_K (more bits) falls back
    r = run_pipelm({"logits", "-m", model, "--tokens", "1,2,3", "--out", out}, tmp_.dir());
    ASSERT_TRUE(r.exited) << r.err;
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(std::filesystem::file_size(out), 3u * 300u * 4u);
}

// Issue 17 §2.7: `--threads 100000` hung for ever. The flag is bounded at parse time; the cap on
// the address space keeps a pipelm without the bound from starting thousands of threads here.
TEST_F(CliErrors, ThreadsOutOfRange) {
    if (kSanitized) GTEST_SKIP() << "RLIMIT_AS does not apply under a sanitizer";
    for (const char* n : {"100000", "0", "1025", "-4"}) {
        const RunResult r =
            run_pipelm({"logits", "-m", good_, "--threads", n, "--tokens", "1", "--out", tmp_.path("x")}, tmp_.dir(),
                       30, kOneGiB);
        EXPECT_TRUE(clean_error(r, tmp_.dir(), kExitInvalidArgument, {"--threads", n, "1 to 1024"})) << n;
    }
    const RunResult w = run_pipelm({"worker", "--listen", "127.0.0.1:0", "--token-file", tmp_.path("t"), "-m", good_,
                                    "--threads", "5000"},
                                   tmp_.dir(), 30, kOneGiB);
    EXPECT_TRUE(clean_error(w, tmp_.dir(), kExitInvalidArgument, {"--threads", "5000", "1 to 1024"}));
    EXPECT_FALSE(std::filesystem::exists(tmp_.path("x")));
}

// When the system refuses a thread the pool cleans up the ones it started and says so (it used
// to block for ever in its own clean-up).
TEST_F(CliErrors, ThreadCreationFailureIsAClearError) {
    if (kSanitized) GTEST_SKIP() << "RLIMIT_AS does not apply under a sanitizer";
    const RunResult r = run_pipelm({"logits", "-m", good_, "--threads", "1000", "--tokens", "1", "--out", tmp_.path("x")},
                                   tmp_.dir(), 30, kOneGiB);
    EXPECT_TRUE(clean_error(r, tmp_.dir(), kExitMemory, {"cannot start compute thread", "of 1000", "lower --threads"}));
    EXPECT_FALSE(std::filesystem::exists(tmp_.path("x")));
}

// Issue 17 §2.5: a token file that group or others can read is refused, as ssh does for keys,
// on the worker and on the coordinator, before anything listens or connects.
TEST_F(CliErrors, TokenFileReadableByOthers) {
    const std::string token = tmp_.path("token");
    {
        std::ofstream f(token);
        f << "0123456789abcdef0123456789abcdef\n";
    }
    ASSERT_EQ(::chmod(token.c_str(), 0644), 0);
    const RunResult w =
        run_pipelm({"worker", "--listen", "127.0.0.1:0", "--token-file", token, "-m", good_, "--once"}, tmp_.dir(), 15);
    EXPECT_TRUE(clean_error(w, tmp_.dir(), kExitInvalidArgument, {token, "chmod 600 " + token}));
    EXPECT_EQ(w.err.find("listening"), std::string::npos) << w.err;
    const RunResult c = run_pipelm({"logits", "-m", good_, "--tokens", "1", "--out", tmp_.path("x"), "--workers",
                                    "127.0.0.1:9", "--token-file", token, "--connect-timeout", "1"},
                                   tmp_.dir(), 15);
    EXPECT_TRUE(clean_error(c, tmp_.dir(), kExitInvalidArgument, {token, "chmod 600 " + token}));
}

}  // namespace
}  // namespace pipelm
