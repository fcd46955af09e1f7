// Recovery in TCP mode (issue 17 §1): a worker SIGKILLed in the middle of a job over 3 workers + 1
// standby; the coordinator gives the lost stage to the standby, replays every live sequence and
// the job's output is byte-identical to an unfaulted in-process run. A worker kills itself with
// SIGKILL when the N-th ubatch of its job arrives (PIPELM_FAULT_KILL_AT_UBATCH=N, read by
// launcher/session_net.cc), so every kill point is exact and repeatable: during the prompt (with
// several chunks in flight, --ubatch 2), at the first decode steps and deep into generation, on
// every stage. Processes are started through tests/testing/process.h and killed if a test fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>

#include "tests/testing/process.h"
#include "tests/testing/test_util.h"

namespace pipelm::testing {
namespace {

const std::string kTiny = data_path("models/glm4-tiny/model.gguf");
const std::string kDemo = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
const Ms kStartTimeout(30000);
const Ms kJobTimeout(60000);

// Where to kill: the worker of `stage` (1..3) at its `ubatch`-th ubatch.
struct KillPoint {
    int stage;
    int ubatch;
};

// Ten points over the three worker stages: the first ubatch (nothing logged yet, two chunks of
// the prompt in flight), the rest of the prompt, the first decode steps, and deep into
// generation.
const std::vector<KillPoint> kTenPoints = {{1, 1}, {3, 1}, {2, 2}, {1, 3}, {3, 4},
                                           {2, 7}, {3, 12}, {1, 20}, {2, 33}, {3, 55}};

class RecoveryTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = make_temp_dir("pipelm-recovery");
        token_ = write_token_file(dir_ + "/token", 1);
        so_.cwd = dir_;
    }
    void TearDown() override {
        workers_.clear();
        EXPECT_TRUE(core_files(dir_).empty()) << "core file(s) in " << dir_;
        if (!HasFailure()) std::filesystem::remove_all(dir_);
        else std::printf("logs kept in %s\n", dir_.c_str());
    }
    std::string path(const std::string& name) const { return dir_ + "/" + name; }

    // `pipelm worker -m model`; with kill_at > 0 it SIGKILLs itself at that ubatch of its job.
    Worker& worker(const std::string& log_name, const std::string& model, int kill_at = 0) {
        SpawnOptions so = so_;
        if (kill_at > 0) so.env.push_back("PIPELM_FAULT_KILL_AT_UBATCH=" + std::to_string(kill_at));
        workers_.push_back(std::make_unique<Worker>(
            start_worker(path(log_name), token_, {"--threads", "1", "-m", model}, so, kStartTimeout)));
        Worker& w = *workers_.back();
        EXPECT_FALSE(w.address.empty()) << "worker did not start:\n" << w.proc.log();
        return w;
    }

    // Runs `pipelm args...` to completion; returns its log (stdout + stderr), expects exit `want`.
    std::string run(const std::vector<std::string>& args, const std::string& log_name, int want = 0) {
        const BoundedResult r = run_bounded(pipelm_argv(args), path(log_name), kJobTimeout, so_);
        const std::string log = read_text(path(log_name));
        EXPECT_FALSE(r.timed_out) << log;
        EXPECT_EQ(r.status, want) << log;
        return log;
    }

    // 3 workers (the one of `k.stage` killing itself at `k.ubatch`) and 1 standby, all serving
    // `model`; returns {--workers list, --standby address}.
    std::pair<std::string, std::string> pipeline_with_killer(const std::string& model, KillPoint k, const std::string& tag) {
        std::string workers;
        for (int s = 1; s <= 3; ++s) {
            Worker& w = worker(tag + "-w" + std::to_string(s) + ".log", model, s == k.stage ? k.ubatch : 0);
            workers += (s > 1 ? "," : "") + w.address;
            if (s == k.stage) killer_ = &w;
        }
        return {workers, worker(tag + "-standby.log", model).address};
    }

    // Runs `args` over a killed pipeline for each point and compares the ids it prints with `ref`.
    void expect_identical_at(const std::vector<KillPoint>& points, const std::string& model,
                             const std::vector<std::string>& args, const std::string& ref, const std::string& name) {
        for (const KillPoint& k : points) {
            const std::string tag = name + "-s" + std::to_string(k.stage) + "-u" + std::to_string(k.ubatch);
            const auto [workers, standby] = pipeline_with_killer(model, k, tag);
            ASSERT_FALSE(HasFailure());
            std::vector<std::string> a = args;
            a.insert(a.end(), {"--workers", workers, "--standby", standby, "--token-file", token_});
            const std::string log = run(a, tag + ".log");
            EXPECT_EQ(ids_line(log), ref) << tag << ":\n" << log;
            const std::string want = "recovery: stage " + std::to_string(k.stage) + ": ";
            EXPECT_NE(log.find(want), std::string::npos) << tag << ": the summary must report the recovery:\n" << log;
            EXPECT_TRUE(std::regex_search(log, std::regex(" in [0-9.]+ s, [0-9]+ tokens replayed"))) << log;
            const auto st = killer_->proc.wait_for(Ms(5000));
            EXPECT_TRUE(st && *st == 128 + SIGKILL) << tag << ": the worker was not killed where the test meant";
            std::printf("%s: %s\n", tag.c_str(), line_with(log, "recovery:").c_str());
            workers_.clear();
        }
    }

    static std::string line_with(const std::string& log, const std::string& key) {
        std::istringstream in(log);
        for (std::string line; std::getline(in, line);)
            if (line.find(key) != std::string::npos) return line;
        return "";
    }
    // The "[id, id, ...]" line of --print-ids.
    static std::string ids_line(const std::string& log) {
        std::smatch m;
        return std::regex_search(log, m, std::regex("\\[[0-9, ]*\\]")) ? m.str() : "(no ids)";
    }

    std::string dir_, token_;
    SpawnOptions so_;
    Worker* killer_ = nullptr;
    std::vector<std::unique_ptr<Worker>> workers_;
};

std::vector<std::string> run_args(const std::string& model, const std::string& prompt, int n) {
    // Seeded sampling with a repetition penalty: the standby's sampler must continue the lost
    // one's random stream and penalty window exactly.
    return {"run", "-m", model, "-p", prompt, "-n", std::to_string(n), "--ignore-eos", "--print-ids", "--threads", "1",
            "--ubatch", "2", "--temp", "0.8", "--seed", "7", "--repeat-penalty", "1.1"};
}

TEST_F(RecoveryTest, TinyKilledAtTenPointsGivesTheUnfaultedIds) {
    const auto args = run_args(kTiny, "hello world", 60);
    const std::string ref = ids_line(run(args, "reference.log"));
    ASSERT_NE(ref, "(no ids)");
    expect_identical_at(kTenPoints, kTiny, args, ref, "tiny");
}

TEST_F(RecoveryTest, DemoGenerating200TokensKilledAtTenPointsGivesTheUnfaultedIds) {
    const auto args = run_args(kDemo, "[gMASK]<sop>The whale", 200);
    const std::string ref = ids_line(run(args, "reference.log"));
    ASSERT_NE(ref, "(no ids)");
    std::vector<KillPoint> points = kTenPoints;
    for (auto& p : points) p.ubatch = p.ubatch * 3;  // the demo prompt is longer; reach into generation
    expect_identical_at(points, kDemo, args, ref, "demo");
}

// bench --sequences 8: 8 sequences in 3 groups in flight; every one finishes with the ids of the
// unfaulted run (written by --ids-out, a line per sequence).
TEST_F(RecoveryTest, EightConcurrentSequencesFinishIdentically) {
    const std::vector<std::string> bench = {"bench", "-m", kTiny, "-p", "0", "-n", "30", "--sequences", "8",
                                            "-r", "1", "--threads", "1"};
    auto with = [&](std::vector<std::string> a, const std::vector<std::string>& more) {
        a.insert(a.end(), more.begin(), more.end());
        return a;
    };
    run(with(bench, {"--ids-out", path("ref.ids")}), "reference.log");
    const std::string ref = read_text(path("ref.ids"));
    ASSERT_EQ(std::count(ref.begin(), ref.end(), '\n'), 8) << ref;
    for (const KillPoint k : {KillPoint{2, 5}, KillPoint{3, 40}, KillPoint{1, 70}}) {
        const std::string tag = "bench-s" + std::to_string(k.stage) + "-u" + std::to_string(k.ubatch);
        const auto [workers, standby] = pipeline_with_killer(kTiny, k, tag);
        ASSERT_FALSE(HasFailure());
        const std::string log = run(with(bench, {"--ids-out", path(tag + ".ids"), "--workers", workers, "--standby",
                                                 standby, "--token-file", token_}),
                                    tag + ".log");
        EXPECT_EQ(read_text(path(tag + ".ids")), ref) << tag << ":\n" << log;
        EXPECT_NE(log.find("recovery: stage " + std::to_string(k.stage)), std::string::npos) << log;
        workers_.clear();
    }
}

// The standby dies too: no standby is left, so the job ends as without recovery (exit 7, naming
// the stage), and the workers that lost their job keep listening (a later job can use them).
TEST_F(RecoveryTest, NoStandbyLeftEndsTheJobNamingTheStage) {
    Worker& w1 = worker("w1.log", kTiny);
    Worker& w2 = worker("w2.log", kTiny, 3);
    Worker& w3 = worker("w3.log", kTiny);
    Worker& sb = worker("standby.log", kTiny, 2);
    ASSERT_FALSE(HasFailure());
    auto args = run_args(kTiny, "hello world", 60);
    const std::string workers = w1.address + "," + w2.address + "," + w3.address;
    args.insert(args.end(), {"--workers", workers, "--standby", sb.address, "--token-file", token_});
    const std::string log = run(args, "coordinator.log", 7);
    const std::string err = line_with(log, "error:");
    EXPECT_NE(err.find("stage 2"), std::string::npos) << log;
    EXPECT_NE(err.find("no standby is left"), std::string::npos) << log;
    EXPECT_TRUE(w1.proc.running() && w3.proc.running()) << "the surviving workers must keep listening";
    // They serve the next job (a worker whose job broke rejoins as a worker or standby).
    auto again = run_args(kTiny, "hello world", 10);
    again.insert(again.end(), {"--workers", w1.address + "," + w3.address, "--token-file", token_});
    run(again, "second-job.log");
}

// No standby, but --mem says the survivors have room: the lost stage's layers go to them (stage 0
// keeps its own), twice in one job, and the ids stay those of the unfaulted run. With budgets too
// small for the lost layers the job ends naming the stage and the budgets.
TEST_F(RecoveryTest, SurvivorsTakeTheLostLayersWhenMemAllows) {
    const auto args = run_args(kTiny, "hello world", 60);
    const std::string ref = ids_line(run(args, "reference.log"));
    ASSERT_NE(ref, "(no ids)");
    {
        // glm4-tiny over 4 stages needs 3.0-3.3 MiB per stage (ctx 256); 12 MiB lets one worker
        // hold all 46 layers after stage 0 with the head.
        Worker& w1 = worker("w1.log", kTiny);
        Worker& w2 = worker("w2.log", kTiny, 3);
        Worker& w3 = worker("w3.log", kTiny, 40);
        ASSERT_FALSE(HasFailure());
        auto a = args;
        a.insert(a.end(), {"--workers", w1.address + "," + w2.address + "," + w3.address, "--mem", "12M",
                           "--token-file", token_});
        const std::string log = run(a, "survivors.log");
        EXPECT_EQ(ids_line(log), ref) << log;
        EXPECT_NE(log.find("recovery: stage 2: " + w2.address + " -> the survivors (layers now 0-14 | "),
                  std::string::npos) << log;
        EXPECT_NE(log.find("recovery: stage 2: " + w3.address + " -> the survivors (layers now 0-14 | 15-60)"),
                  std::string::npos) << log;
        std::printf("%s\n%s\n", line_with(log, "recovery: stage 2: " + w2.address).c_str(),
                    line_with(log, "recovery: stage 2: " + w3.address).c_str());
        // The summary counts the stages that finished the run, one busy time each (not the 4 it began with).
        const std::string summary = line_with(log, "stage(s)");
        EXPECT_NE(summary.find("| 2 stage(s), "), std::string::npos) << summary;
        const std::string busy = summary.substr(summary.rfind("busy ") + 5);
        EXPECT_EQ(std::count(busy.begin(), busy.end(), '%'), 2) << summary;
        for (Worker* w : {&w2, &w3}) {
            const auto st = w->proc.wait_for(Ms(5000));
            EXPECT_TRUE(st && *st == 128 + SIGKILL) << "a worker was not killed where the test meant";
        }
        workers_.clear();
    }
    Worker& w1 = worker("tight-w1.log", kTiny);
    Worker& w2 = worker("tight-w2.log", kTiny, 3);
    Worker& w3 = worker("tight-w3.log", kTiny);
    ASSERT_FALSE(HasFailure());
    auto a = args;
    a.insert(a.end(), {"--workers", w1.address + "," + w2.address + "," + w3.address, "--mem", "4M", "--token-file",
                       token_});
    const std::string err = line_with(run(a, "tight.log", 7), "error:");
    EXPECT_NE(err.find("stage 2 (worker " + w2.address + ", layers 31-46) is lost and no standby is left"),
              std::string::npos) << err;
    EXPECT_NE(err.find("cannot hold layers 15-60 within their --mem budgets"), std::string::npos) << err;
}

// Without --standby a lost stage ends the job as before; --standby is refused outside TCP mode.
TEST_F(RecoveryTest, StandbyOnlyInTcpMode) {
    auto args = run_args(kTiny, "hello", 4);
    args.insert(args.end(), {"--stages", "2", "--standby", "127.0.0.1:1"});
    const std::string log = run(args, "inproc.log", 2);
    EXPECT_NE(log.find("--standby works only with --workers"), std::string::npos) << log;
}

}  // namespace
}  // namespace pipelm::testing
