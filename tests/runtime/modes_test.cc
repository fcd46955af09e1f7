// End-to-end tests of the three pipeline modes: the same command gives byte-identical logits,
// the same greedy ids and the same perplexity line whether the model runs as one stage, as
// in-process stages, as MPI ranks (`mpirun -np N pipelm ...`) or as a coordinator with TCP
// workers (`pipelm worker --once`). Every process is started with a bounded wait and killed if
// the test fails (tests/testing/process.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>

#include "tests/testing/process.h"
#include "tests/testing/json_util.h"

namespace pipelm::testing {
namespace {

const Ms kJobTimeout(90000);     // one coordinator run (seconds normally; generous under ctest -j2)
const Ms kWorkerExit(15000);     // a --once worker exits this soon after its coordinator

const std::string kTiny = data_path("models/glm4-tiny/model.gguf");
const std::string kDemo = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
const std::string kValid = data_path("tokenizer/glm4-demo-valid.txt");

std::vector<int32_t> tiny_prompt(const std::string& name) {
    return json_ids(read_json(data_path("models/glm4-tiny/ref/prompts.json")).at(name).at("ids"));
}

// Stages of a --split list: "20,20,21" -> 3.
int n_stages_of(const std::string& split) { return 1 + static_cast<int>(std::count(split.begin(), split.end(), ',')); }

// The line of `out` that starts with `prefix` and contains `needle` ("" if none).
std::string find_line(const std::string& out, const std::string& prefix, const std::string& needle = "") {
    size_t b = 0;
    while (b < out.size()) {
        size_t e = out.find('\n', b);
        if (e == std::string::npos) e = out.size();
        const std::string line = out.substr(b, e - b);
        if (line.rfind(prefix, 0) == 0 && line.find(needle) != std::string::npos) return line;
        b = e + 1;
    }
    return "";
}

// The JSON id list printed by --print-ids: the line that starts with '[' and a digit (log lines
// under MPI start with "[rank 0]").
std::string ids_line(const std::string& out) {
    size_t b = 0;
    while (b < out.size()) {
        size_t e = out.find('\n', b);
        if (e == std::string::npos) e = out.size();
        if (e - b >= 2 && out[b] == '[' && std::isdigit(static_cast<unsigned char>(out[b + 1]))) return out.substr(b, e - b);
        b = e + 1;
    }
    return "";
}

// Byte comparison of two logits files, with the first differing element in the message.
::testing::AssertionResult same_bytes(const std::string& got_path, const std::string& want_path) {
    const std::string got = slurp(got_path), want = slurp(want_path);
    if (want.empty()) return ::testing::AssertionFailure() << want_path << " is empty";
    if (got.size() != want.size())
        return ::testing::AssertionFailure() << got_path << " has " << got.size() << " bytes, expected " << want.size();
    if (std::memcmp(got.data(), want.data(), got.size()) == 0) return ::testing::AssertionSuccess();
    for (size_t i = 0; i + 4 <= got.size(); i += 4)
        if (std::memcmp(got.data() + i, want.data() + i, 4) != 0) {
            float a, b;
            std::memcpy(&a, got.data() + i, 4);
            std::memcpy(&b, want.data() + i, 4);
            return ::testing::AssertionFailure() << "first difference at float " << i / 4 << ": " << a << " vs " << b;
        }
    return ::testing::AssertionFailure() << "differs";
}

class ModesTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() { allow_mpirun_as_root(); }
    void SetUp() override {
        dir_ = make_temp_dir("pipelm-modes");
        token_ = write_token_file(dir_ + "/token", 42);
        so_.cwd = dir_;
    }
    void TearDown() override {
        workers_.clear();  // kills any worker still running
        if (!HasFailure()) std::filesystem::remove_all(dir_);
        else std::printf("logs kept in %s\n", dir_.c_str());
    }
    std::string path(const std::string& name) const { return dir_ + "/" + name; }

    void skip_without_mpirun() {
        if (!on_path("mpirun")) GTEST_SKIP() << "mpirun is not on PATH (install openmpi-bin to run the MPI mode tests)";
    }

    // Runs a pipelm command line (argv) to completion; asserts exit 0 within the job timeout.
    BoundedResult run_ok(const std::vector<std::string>& argv, const std::string& log_name) {
        BoundedResult r = run_bounded(argv, path(log_name), kJobTimeout, so_);
        EXPECT_FALSE(r.timed_out) << "still running after " << kJobTimeout.count() / 1000 << " s (killed):\n" << r.output;
        EXPECT_EQ(r.status, 0) << r.output;
        return r;
    }

    // Starts n TCP workers (--once, 1 thread, serving the models of these tests); returns "h:p,h:p".
    std::string start_workers(int n) {
        std::string list;
        for (int i = 0; i < n; ++i) {
            workers_.push_back(start_worker(path("worker" + std::to_string(i + 1) + ".log"), token_,
                                            {"--once", "--threads", "1", "-m", kTiny + "," + kDemo}, so_));
            Worker& w = workers_.back();
            EXPECT_FALSE(w.address.empty()) << "worker " << i + 1 << " did not start:\n" << w.proc.log();
            list += (i ? "," : "") + w.address;
        }
        return list;
    }

    // Every --once worker exits 0 soon after a completed job.
    void expect_workers_done() {
        for (size_t i = 0; i < workers_.size(); ++i) {
            const auto st = workers_[i].proc.wait_for(kWorkerExit);
            EXPECT_TRUE(st.has_value()) << "worker " << i + 1 << " still running:\n" << workers_[i].proc.log();
            if (st) {
                EXPECT_EQ(*st, 0) << "worker " << i + 1 << ":\n" << workers_[i].proc.log();
            }
            EXPECT_NE(workers_[i].proc.log().find("job done"), std::string::npos) << workers_[i].proc.log();
        }
        workers_.clear();
    }

    std::vector<std::string> tcp_args(const std::string& workers) const {
        return {"--workers", workers, "--token-file", token_};
    }

    std::string dir_, token_;
    SpawnOptions so_;
    std::vector<Worker> workers_;
};

// ---- split invariance: `pipelm logits` p64, --ubatch 16 ------------------------------------

class SplitInvariance : public ModesTest, public ::testing::WithParamInterface<const char*> {
protected:
    std::vector<std::string> logits_args(const std::string& out, const std::vector<std::string>& extra = {}) const {
        std::vector<std::string> a = {"logits", "-m", kTiny, "--tokens", ids_arg(tiny_prompt("p64")),
                                      "--ubatch", "16", "--threads", "1", "--out", out};
        for (const auto& e : extra) a.push_back(e);
        return a;
    }
    // The one-stage in-process logits every split is compared with.
    std::string reference() {
        const std::string ref = path("ref.f32");
        run_ok(pipelm_argv(logits_args(ref)), "ref.log");
        EXPECT_EQ(slurp(ref).size(), size_t(64) * 666 * 4);
        return ref;
    }
};

TEST_P(SplitInvariance, MpiRanksGiveByteIdenticalLogits) {
    skip_without_mpirun();
    const std::string split = GetParam();
    const std::string ref = reference();
    const std::string out = path("mpi.f32");
    // -np 1 is a plain run (mpirun with one rank is not a pipeline): that path is checked too.
    const BoundedResult r = run_ok(mpirun_argv(n_stages_of(split), logits_args(out, {"--split", split})), "mpi.log");
    if (n_stages_of(split) > 1) {
        EXPECT_NE(r.output.find(std::to_string(n_stages_of(split)) + " stages, one per MPI rank"), std::string::npos)
            << r.output;
    }
    EXPECT_TRUE(same_bytes(out, ref)) << "split " << split << " over MPI\n" << r.output;
}

TEST_P(SplitInvariance, TcpWorkersGiveByteIdenticalLogits) {
    const std::string split = GetParam();
    const std::string ref = reference();
    const std::string out = path("tcp.f32");
    const int n_workers = n_stages_of(split) - 1;
    std::vector<std::string> extra = {"--split", split};
    if (n_workers > 0) {
        const std::string workers = start_workers(n_workers);
        ASSERT_FALSE(HasFailure());
        for (const auto& a : tcp_args(workers)) extra.push_back(a);
    }
    const BoundedResult r = run_ok(pipelm_argv(logits_args(out, extra)), "tcp.log");
    if (n_workers > 0) {
        EXPECT_NE(r.output.find(std::to_string(n_workers + 1) + " stages, TCP workers"), std::string::npos) << r.output;
    }
    EXPECT_TRUE(same_bytes(out, ref)) << "split " << split << " over TCP\n" << r.output;
    expect_workers_done();
}

INSTANTIATE_TEST_SUITE_P(Splits, SplitInvariance,
                         ::testing::Values("61", "30,31", "1,60", "60,1", "20,20,21", "16,15,15,15"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                             std::string n = std::string("s") + i.param;
                             std::replace(n.begin(), n.end(), ',', '_');
                             return n;
                         });

// ---- greedy generation: the same ids in every mode ------------------------------------------

class GreedyIds : public ModesTest {
protected:
    std::vector<std::string> run_args(const std::vector<std::string>& extra = {}) const {
        std::vector<std::string> a = {"run", "-m", kTiny, "--tokens", ids_arg(tiny_prompt("p7")), "-n", "32",
                                      "--temp", "0", "--ignore-eos", "--print-ids", "--threads", "1"};
        for (const auto& e : extra) a.push_back(e);
        return a;
    }
    std::string ids_of(const BoundedResult& r) {
        const std::string line = ids_line(r.output);
        EXPECT_FALSE(line.empty()) << "no id list in:\n" << r.output;
        EXPECT_EQ(std::count(line.begin(), line.end(), ',') + 1, 32) << line;
        return line;
    }
};

TEST_F(GreedyIds, SameIdsInProcessMpiAndTcp) {
    const std::string one = ids_of(run_ok(pipelm_argv(run_args()), "one.log"));
    {
        const BoundedResult r = run_ok(pipelm_argv(run_args({"--stages", "3"})), "inproc3.log");
        EXPECT_EQ(ids_of(r), one) << "3 in-process stages\n" << r.output;
    }
    {
        const std::string workers = start_workers(2);
        ASSERT_FALSE(HasFailure());
        const BoundedResult r = run_ok(pipelm_argv(run_args(tcp_args(workers))), "tcp.log");
        EXPECT_NE(r.output.find("3 stage(s), tcp"), std::string::npos) << r.output;
        EXPECT_EQ(ids_of(r), one) << "TCP, 2 workers\n" << r.output;
        expect_workers_done();
    }
    if (!on_path("mpirun")) GTEST_SKIP() << "mpirun is not on PATH: MPI part not run (in-process and TCP passed)";
    const BoundedResult r = run_ok(mpirun_argv(2, run_args()), "mpi.log");
    EXPECT_NE(r.output.find("2 stage(s), mpi"), std::string::npos) << r.output;
    EXPECT_EQ(ids_of(r), one) << "MPI, 2 ranks\n" << r.output;
}

// ---- perplexity: the identical "perplexity:" line in every mode ------------------------------

class PerplexityLine : public ModesTest {
protected:
    std::vector<std::string> ppl_args(const std::vector<std::string>& extra = {}) const {
        std::vector<std::string> a = {"perplexity", "-m", kDemo, "-f", kValid, "--chunks", "3", "--threads", "1"};
        for (const auto& e : extra) a.push_back(e);
        return a;
    }
    std::string ppl_of(const BoundedResult& r) {
        const std::string line = find_line(r.output, "perplexity: ", "+/-");
        EXPECT_FALSE(line.empty()) << "no perplexity line in:\n" << r.output;
        EXPECT_NE(line.find("3 windows of 256"), std::string::npos) << line;
        return line;
    }
};

TEST_F(PerplexityLine, SameLineInProcessMpiAndTcp) {
    const std::string one = ppl_of(run_ok(pipelm_argv(ppl_args()), "one.log"));
    {
        const BoundedResult r = run_ok(pipelm_argv(ppl_args({"--stages", "2"})), "inproc2.log");
        EXPECT_EQ(ppl_of(r), one) << "2 in-process stages\n" << r.output;
    }
    {
        const std::string workers = start_workers(1);
        ASSERT_FALSE(HasFailure());
        const BoundedResult r = run_ok(pipelm_argv(ppl_args(tcp_args(workers))), "tcp.log");
        EXPECT_EQ(ppl_of(r), one) << "TCP, 1 worker\n" << r.output;
        expect_workers_done();
    }
    if (!on_path("mpirun")) GTEST_SKIP() << "mpirun is not on PATH: MPI part not run (in-process and TCP passed)";
    const BoundedResult r = run_ok(mpirun_argv(2, ppl_args()), "mpi.log");
    EXPECT_EQ(ppl_of(r), one) << "MPI, 2 ranks\n" << r.output;
}

}  // namespace
}  // namespace pipelm::testing
