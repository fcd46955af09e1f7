// Fault behaviour of the pipeline modes, end to end: a TCP worker or an MPI rank killed in the
// middle of a job, a worker that cannot be reached, a wrong token, a port in use, Ctrl-C on the
// coordinator, and a model mismatch between coordinator and worker. Each test asserts the exit
// codes, how fast every process goes away, and the message the user sees. Every process is
// started through tests/testing/process.h and killed (with its descendants) if the test fails.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <regex>
#include <thread>

#include "tests/testing/process.h"
#include "tests/testing/test_util.h"

namespace pipelm::testing {
namespace {

const std::string kTiny = data_path("models/glm4-tiny/model.gguf");
const std::string kRange = data_path("models/glm4-range/model.gguf");
const std::string kDemo = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
const std::string kValid = data_path("tokenizer/glm4-demo-valid.txt");
const Ms kStartTimeout(30000);  // a process reaches the point where the test acts on it
const Ms kJobTimeout(90000);    // a short job completes

bool crashed(int status) {
    for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS})
        if (status == 128 + sig) return true;
    return false;
}

// A port on 127.0.0.1 that is bound (so nobody else can take it) but not listening: connecting
// to it is refused.
class HeldPort {
public:
    HeldPort() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        socklen_t len = sizeof a;
        if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
            port_ = ntohs(a.sin_port);
    }
    ~HeldPort() {
        if (fd_ >= 0) ::close(fd_);
    }
    int port() const { return port_; }

private:
    int fd_ = -1;
    int port_ = 0;
};

// The flags of a job over TCP workers (comma-separated addresses) with `token_file`.
std::vector<std::string> over_workers(const std::string& addresses, const std::string& token_file) {
    return {"--workers", addresses, "--token-file", token_file};
}

// A long generation (4000 tokens of the demo model: tens of seconds on one thread).
std::vector<std::string> long_run_args(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> a = {"run", "-m", kDemo, "-p", "[gMASK]<sop>The whale", "--ctx", "4096",
                                  "-n", "4000", "--ignore-eos", "--threads", "1"};
    for (const auto& e : extra) a.push_back(e);
    return a;
}

std::vector<std::string> logits_args(const std::string& model, const std::string& out,
                                     const std::vector<std::string>& extra = {}) {
    std::vector<std::string> a = {"logits", "-m", model, "--tokens", "658,660,663,198,71,72,664", "--threads", "1",
                                  "--out", out};
    for (const auto& e : extra) a.push_back(e);
    return a;
}

class FaultsTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() { allow_mpirun_as_root(); }
    void SetUp() override {
        dir_ = make_temp_dir("pipelm-faults");
        token_a_ = write_token_file(dir_ + "/token-a", 1);
        token_b_ = write_token_file(dir_ + "/token-b", 2);
        so_.cwd = dir_;
    }
    void TearDown() override {
        procs_.clear();
        workers_.clear();
        // Processes run with cwd = dir_ and a raised core limit: a crash would leave a core here.
        EXPECT_TRUE(core_files(dir_).empty()) << "core file(s) in " << dir_;
        if (!HasFailure()) std::filesystem::remove_all(dir_);
        else std::printf("logs kept in %s\n", dir_.c_str());
    }
    std::string path(const std::string& name) const { return dir_ + "/" + name; }

    // A perplexity job that runs long enough to be interrupted: the demo's validation text 8 times
    // (1392 windows of 256, ~15-30 s on one thread). The text itself is 174 windows, which a fast
    // core (Zen 5, 0.01 s a window) finished within the second that the tests wait after the job
    // starts, before the fault they inject.
    std::vector<std::string> perplexity_args(const std::vector<std::string>& extra = {}) {
        const std::string text = path("valid-x8.txt");
        if (!std::filesystem::exists(text)) {
            std::ifstream in(kValid, std::ios::binary);
            const std::string one((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            EXPECT_FALSE(one.empty()) << "cannot read " << kValid;
            std::ofstream out(text, std::ios::binary);
            for (int i = 0; i < 8; ++i) out << one << "\n";
        }
        std::vector<std::string> a = {"perplexity", "-m", kDemo, "-f", text, "--threads", "1"};
        for (const auto& e : extra) a.push_back(e);
        return a;
    }

    void skip_without_mpirun() {
        if (!on_path("mpirun")) GTEST_SKIP() << "mpirun is not on PATH (install openmpi-bin to run the MPI fault tests)";
    }

    Process& spawn(const std::vector<std::string>& argv, const std::string& log_name) {
        procs_.push_back(std::make_unique<Process>(Process::spawn(argv, path(log_name), so_)));
        EXPECT_TRUE(procs_.back()->started()) << argv[0];
        return *procs_.back();
    }

    // `pipelm worker` serving `model` (its -m) with `token`.
    Worker& worker(const std::string& log_name, const std::string& token, const std::string& model,
                   const std::vector<std::string>& extra) {
        std::vector<std::string> args = {"--threads", "1", "-m", model};
        for (const auto& e : extra) args.push_back(e);
        workers_.push_back(std::make_unique<Worker>(start_worker(path(log_name), token, args, so_, kStartTimeout)));
        Worker& w = *workers_.back();
        EXPECT_FALSE(w.address.empty()) << "worker did not start:\n" << w.proc.log();
        return w;
    }

    // Waits until neither `p` nor anything it started is alive.
    ::testing::AssertionResult all_gone(const Process& p, Ms within) {
        const auto t0 = Clock::now();
        for (;;) {
            const auto left = p.tagged();
            if (left.empty()) return ::testing::AssertionSuccess();
            if (Clock::now() - t0 >= within) {
                auto f = ::testing::AssertionFailure() << left.size() << " process(es) left behind:";
                for (pid_t q : left) {
                    f << "\n  " << q << ":";
                    for (const auto& a : proc_strings(q, "cmdline")) f << " " << a;
                }
                return f;
            }
            std::this_thread::sleep_for(Ms(20));
        }
    }

    // Expects `p` to exit within `within` (from now); returns its status (-1 if it did not).
    int expect_exit(Process& p, Ms within, const std::string& who) {
        const auto st = p.wait_for(within);
        EXPECT_TRUE(st.has_value()) << who << " still running " << within.count() / 1000.0 << " s later:\n" << p.log();
        if (!st) return -1;
        EXPECT_FALSE(crashed(*st)) << who << " crashed (status " << *st << "):\n" << p.log();
        return *st;
    }

    // Waits until `p` prints `text` (kStartTimeout), lets it work for `run_for` and expects it still
    // running then (`why` starts the failure message). Call through ASSERT_NO_FATAL_FAILURE.
    void wait_then_expect_running(Process& p, const std::string& text, Ms run_for, const std::string& why = "") {
        ASSERT_TRUE(p.wait_for_text(text, kStartTimeout)) << p.log();
        std::this_thread::sleep_for(run_for);
        ASSERT_TRUE(p.running()) << why << p.log();
    }

    struct TwoWorkerJob {
        Worker* w1 = nullptr;
        Worker* w2 = nullptr;
        Process* coord = nullptr;
    };

    // Two --once workers with token A and a perplexity coordinator over them (coordinator.log),
    // once worker 1 has the job; `extra` goes to the workers and the coordinator. Call through
    // ASSERT_NO_FATAL_FAILURE.
    void start_two_worker_perplexity(TwoWorkerJob& job, const std::vector<std::string>& extra = {}) {
        std::vector<std::string> wflags = {"--once"};
        wflags.insert(wflags.end(), extra.begin(), extra.end());
        job.w1 = &worker("worker1.log", token_a_, kDemo, wflags);
        job.w2 = &worker("worker2.log", token_a_, kDemo, wflags);
        ASSERT_FALSE(HasFailure());
        const std::string addresses = job.w1->address + "," + job.w2->address;
        std::vector<std::string> cflags = over_workers(addresses, token_a_);
        cflags.insert(cflags.end(), extra.begin(), extra.end());
        job.coord = &spawn(pipelm_argv(perplexity_args(cflags)), "coordinator.log");
        ASSERT_TRUE(job.w1->proc.wait_for_text("job:", kStartTimeout)) << job.w1->proc.log() << job.coord->log();
    }

    // `logits` of glm4-tiny into `out` over the worker at `address` with `token`, bounded by `timeout`.
    BoundedResult logits_over_worker(const std::string& address, const std::string& token, const std::string& out,
                                     const std::string& log_name, Ms timeout) {
        return run_bounded(pipelm_argv(logits_args(kTiny, path(out), over_workers(address, token))), path(log_name),
                           timeout, so_);
    }

    std::string dir_, token_a_, token_b_;
    SpawnOptions so_;
    std::vector<std::unique_ptr<Process>> procs_;
    std::vector<std::unique_ptr<Worker>> workers_;
};

// "generated N tokens" from the summary line (-1 if absent).
int generated_tokens(const std::string& log) {
    std::smatch m;
    if (std::regex_search(log, m, std::regex("generated ([0-9]+) tokens"))) return std::stoi(m[1]);
    return -1;
}

// ---- a. TCP worker killed mid-job ------------------------------------------------------------

TEST_F(FaultsTest, TcpWorkerKilledMidJob) {
    TwoWorkerJob job;
    ASSERT_NO_FATAL_FAILURE(start_two_worker_perplexity(job));
    Worker &w1 = *job.w1, &w2 = *job.w2;
    Process& coord = *job.coord;
    ASSERT_NO_FATAL_FAILURE(wait_then_expect_running(coord, "windows of 256", Ms(1000),
                                                     "the job ended before the worker could be killed:\n"));

    const auto t0 = Clock::now();
    ASSERT_TRUE(w1.proc.signal(SIGKILL));
    const int st = expect_exit(coord, Ms(10000), "coordinator");
    const double t_coord = seconds_since(t0);
    EXPECT_NE(st, 0) << coord.log();
    EXPECT_EQ(st, 7) << "peer lost is exit code 7:\n" << coord.log();
    EXPECT_NE(coord.log().find("stage 1"), std::string::npos) << "the message must name the lost stage:\n" << coord.log();
    const int st2 = expect_exit(w2.proc, Ms(10000), "worker 2");
    const double t_w2 = seconds_since(t0);
    EXPECT_NE(st2, 0) << w2.proc.log();
    EXPECT_EQ(expect_exit(w1.proc, Ms(1000), "worker 1"), 128 + SIGKILL);
    for (Process* p : {&coord, &w1.proc, &w2.proc}) EXPECT_TRUE(all_gone(*p, Ms(2000)));
    std::printf("coordinator exit %d after %.2f s: %s\nworker 2 exit %d after %.2f s: %s\n", st, t_coord,
                coord.line_with("error:").c_str(), st2, t_w2, w2.proc.line_with("error").c_str());
}

// A worker that stops answering without closing its sockets (SIGSTOP: a hung process or an
// unreachable host): the heartbeat timeout (10 s) ends the job on every side.
TEST_F(FaultsTest, TcpWorkerFrozenMidJobTimesOut) {
    TwoWorkerJob job;
    // --peer-timeout 3 on every process (default 10 s): the silence that counts as a lost peer.
    ASSERT_NO_FATAL_FAILURE(start_two_worker_perplexity(job, {"--peer-timeout", "3"}));
    Worker &w1 = *job.w1, &w2 = *job.w2;
    Process& coord = *job.coord;
    ASSERT_NO_FATAL_FAILURE(wait_then_expect_running(coord, "windows of 256", Ms(500)));

    const auto t0 = Clock::now();
    ASSERT_TRUE(w1.proc.signal(SIGSTOP));
    const int st = expect_exit(coord, Ms(20000), "coordinator");
    const double t_coord = seconds_since(t0);
    EXPECT_EQ(st, 7) << coord.log();
    // Lost after 3 s of silence, counted from the last heartbeat heard (sent every 0.75 s): at
    // 2.25 s at the earliest; well before the default 10 s.
    EXPECT_GE(t_coord, 2.0) << "gave up on a silent peer before its --peer-timeout:\n" << coord.log();
    EXPECT_LT(t_coord, 8.0) << "--peer-timeout 3 was not applied (the default is 10 s):\n" << coord.log();
    const std::string err = coord.line_with("error:");
    EXPECT_NE(err.find("stage 1"), std::string::npos) << coord.log();
    EXPECT_NE(coord.log().find("heartbeat"), std::string::npos) << coord.log();
    const int st2 = expect_exit(w2.proc, Ms(20000), "worker 2");
    EXPECT_NE(st2, 0) << w2.proc.log();
    std::printf("coordinator exit %d %.2f s after SIGSTOP: %s\nworker 2 exit %d\n", st, t_coord, err.c_str(), st2);
    for (Process* p : {&coord, &w2.proc}) EXPECT_TRUE(all_gone(*p, Ms(2000)));
}

// ---- b. MPI rank killed mid-job --------------------------------------------------------------

TEST_F(FaultsTest, MpiRankKilledMidJob) {
    skip_without_mpirun();
    Process& mpi = spawn(mpirun_argv(3, perplexity_args()), "mpirun.log");
    ASSERT_NO_FATAL_FAILURE(wait_then_expect_running(mpi, "windows of 256", Ms(1000),
                                                     "the job ended before the rank could be killed:\n"));

    // Rank 1: a pipelm process started by this mpirun with OMPI_COMM_WORLD_RANK=1.
    pid_t rank1 = -1;
    for (pid_t q : mpi.tagged()) {
        const auto cmd = proc_strings(q, "cmdline");
        if (!cmd.empty() && cmd[0] == PIPELM_BINARY && proc_has_env(q, "OMPI_COMM_WORLD_RANK=1")) rank1 = q;
    }
    ASSERT_GT(rank1, 0) << "rank 1 not found among the processes of mpirun";
    const auto t0 = Clock::now();
    ASSERT_EQ(::kill(rank1, SIGKILL), 0);
    const int st = expect_exit(mpi, Ms(10000), "mpirun");
    const double t_mpi = seconds_since(t0);
    EXPECT_NE(st, 0) << mpi.log();
    const std::string out = mpi.log();
    const bool openmpi_names_it = std::regex_search(out, std::regex("rank 1[^\\n]*signal 9"));
    const bool we_name_it = out.find("stage 1") != std::string::npos;
    EXPECT_TRUE(openmpi_names_it || we_name_it) << "the output must name rank/stage 1:\n" << out;
    EXPECT_TRUE(all_gone(mpi, Ms(10000)));
    std::printf("mpirun exit %d after %.2f s (OpenMPI names rank 1: %d, pipelm names stage 1: %d)\n", st, t_mpi,
                openmpi_names_it, we_name_it);
}

// ---- c. worker unreachable at start ----------------------------------------------------------

TEST_F(FaultsTest, UnreachableWorkerFailsWithinConnectTimeout) {
    HeldPort port;
    ASSERT_GT(port.port(), 0);
    const std::string addr = "127.0.0.1:" + std::to_string(port.port());
    const BoundedResult r = run_bounded(
        pipelm_argv(logits_args(kTiny, path("x.f32"), {"--workers", addr, "--token-file", token_a_, "--connect-timeout", "2"})),
        path("coordinator.log"), Ms(30000), so_);
    ASSERT_FALSE(r.timed_out) << r.output;
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_FALSE(crashed(r.status)) << r.output;
    EXPECT_EQ(r.status, 7) << "timeout is exit code 7:\n" << r.output;
    EXPECT_LT(r.seconds, 6.0) << r.output;
    EXPECT_GE(r.seconds, 1.5) << "it should keep trying for --connect-timeout 2 s:\n" << r.output;
    EXPECT_NE(r.output.find("could not reach worker " + addr), std::string::npos) << r.output;
    std::printf("exit %d after %.2f s\n", r.status, r.seconds);
}

// ---- d. wrong token --------------------------------------------------------------------------

TEST_F(FaultsTest, WrongTokenIsRefusedAndTheWorkerKeepsServing) {
    Worker& w = worker("worker.log", token_a_, kTiny, {});
    ASSERT_FALSE(HasFailure());
    const BoundedResult bad = logits_over_worker(w.address, token_b_, "bad.f32", "coordinator-b.log", Ms(30000));
    ASSERT_FALSE(bad.timed_out) << bad.output;
    EXPECT_NE(bad.status, 0) << bad.output;
    EXPECT_FALSE(crashed(bad.status)) << bad.output;
    EXPECT_NE(bad.output.find("token"), std::string::npos) << bad.output;
    EXPECT_NE(bad.output.find(w.address), std::string::npos) << "the message should name the worker:\n" << bad.output;
    // The worker warns, naming the refused peer, and keeps serving.
    ASSERT_TRUE(w.proc.wait_for_text("refused", Ms(5000))) << w.proc.log();
    const std::string warn = w.proc.line_with("refused");
    EXPECT_TRUE(std::regex_search(warn, std::regex("127\\.0\\.0\\.1:[0-9]+"))) << warn;
    EXPECT_NE(warn.find("token"), std::string::npos) << warn;
    EXPECT_TRUE(w.proc.running()) << w.proc.log();

    // The right token: the job completes against the same worker, with the one-stage logits.
    const BoundedResult good = logits_over_worker(w.address, token_a_, "good.f32", "coordinator-a.log", kJobTimeout);
    ASSERT_FALSE(good.timed_out) << good.output;
    EXPECT_EQ(good.status, 0) << good.output << w.proc.log();
    const BoundedResult one = run_bounded(pipelm_argv(logits_args(kTiny, path("one.f32"))), path("one.log"), kJobTimeout, so_);
    EXPECT_EQ(one.status, 0) << one.output;
    const std::string a = slurp(path("good.f32")), b = slurp(path("one.f32"));
    EXPECT_EQ(a.size(), size_t(7) * 666 * 4);
    EXPECT_TRUE(a == b) << "logits over the worker differ from the one-stage run";
    EXPECT_TRUE(w.proc.running()) << "a worker without --once keeps serving:\n" << w.proc.log();

    // SIGTERM stops an idle worker: exit 130 (it checks between accept timeouts of 2 s).
    const auto t0 = Clock::now();
    ASSERT_TRUE(w.proc.signal(SIGTERM));
    EXPECT_EQ(expect_exit(w.proc, Ms(6000), "worker"), 130) << w.proc.log();
    std::printf("idle worker stopped by SIGTERM after %.2f s\n", seconds_since(t0));
    EXPECT_TRUE(all_gone(w.proc, Ms(2000)));
}

// ---- e. port in use --------------------------------------------------------------------------

TEST_F(FaultsTest, SecondWorkerOnTheSamePortSaysInUse) {
    Worker& first = worker("worker1.log", token_a_, kTiny, {});
    ASSERT_FALSE(HasFailure());
    const BoundedResult r =
        run_bounded(pipelm_argv({"worker", "--listen", first.address, "--token-file", token_a_, "-m", kTiny}),
                    path("worker2.log"), Ms(10000), so_);
    ASSERT_FALSE(r.timed_out) << "the second worker did not give up:\n" << r.output;
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_FALSE(crashed(r.status)) << r.output;
    EXPECT_NE(r.output.find("in use"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(first.address), std::string::npos) << "the message should name the address:\n" << r.output;
    EXPECT_TRUE(first.proc.running()) << first.proc.log();
    std::printf("exit %d after %.2f s: %s", r.status, r.seconds, r.output.c_str());
}

// ---- f. Ctrl-C on the coordinator ------------------------------------------------------------

// SIGINT after ~1 s of generation: exit 130 within 5 s with the summary line.
void expect_orderly_interrupt(Process& coord, const std::string& mode, int n_stages) {
    std::this_thread::sleep_for(Ms(1000));
    ASSERT_TRUE(coord.running()) << "the job ended before Ctrl-C:\n" << coord.log();
    const auto t0 = Clock::now();
    ASSERT_TRUE(coord.signal(SIGINT));
    const auto st = coord.wait_for(Ms(5000));
    const double t = seconds_since(t0);
    ASSERT_TRUE(st.has_value()) << "still running 5 s after SIGINT:\n" << coord.log();
    EXPECT_EQ(*st, 130) << coord.log();
    const std::string log = coord.log();
    EXPECT_NE(log.find("interrupted"), std::string::npos) << log;
    const int n = generated_tokens(log);
    EXPECT_GT(n, 0) << "no summary line:\n" << log;
    EXPECT_LT(n, 4000) << log;
    EXPECT_NE(log.find(std::to_string(n_stages) + " stage(s), " + mode), std::string::npos) << log;
    std::printf("%s: exit %d %.2f s after SIGINT, %d tokens generated\n", mode.c_str(), *st, t, n);
}

TEST_F(FaultsTest, CtrlCInProcessStopsCleanly) {
    Process& coord = spawn(pipelm_argv(long_run_args({"--stages", "2"})), "coordinator.log");
    ASSERT_TRUE(coord.wait_for_text("plan:", kStartTimeout)) << coord.log();
    expect_orderly_interrupt(coord, "in-process", 2);
    EXPECT_TRUE(all_gone(coord, Ms(2000)));
}

TEST_F(FaultsTest, CtrlCOverTcpStopsCoordinatorAndWorker) {
    Worker& w = worker("worker.log", token_a_, kDemo, {"--once"});
    ASSERT_FALSE(HasFailure());
    Process& coord = spawn(pipelm_argv(long_run_args(over_workers(w.address, token_a_))), "coordinator.log");
    ASSERT_TRUE(w.proc.wait_for_text("job:", kStartTimeout)) << w.proc.log() << coord.log();
    expect_orderly_interrupt(coord, "tcp", 2);
    // The job ended by an orderly shutdown: the --once worker exits 0.
    EXPECT_EQ(expect_exit(w.proc, Ms(5000), "worker"), 0) << w.proc.log();
    EXPECT_NE(w.proc.log().find("job done"), std::string::npos) << w.proc.log();
    for (Process* p : {&coord, &w.proc}) EXPECT_TRUE(all_gone(*p, Ms(2000)));
}

// Ctrl-C on mpirun. OpenMPI 4 does not forward SIGINT (and puts every rank in a process group of
// its own, so a terminal's Ctrl-C reaches only mpirun): it sends SIGCONT, then SIGTERM to each
// rank 1 s later, then SIGKILL 1 s after that. On SIGTERM rank 0 stops, prints its summary line
// and shuts the pipeline down, but MPI_Finalize then waits on the aborting mpirun until the
// SIGKILL; mpirun exits 1. Only "everything is gone within 10 s" is asserted.
TEST_F(FaultsTest, CtrlCOnMpirunEndsEveryRank) {
    skip_without_mpirun();
    Process& mpi = spawn(mpirun_argv(2, long_run_args()), "mpirun.log");
    ASSERT_NO_FATAL_FAILURE(wait_then_expect_running(mpi, "plan:", Ms(1500)));
    const auto t0 = Clock::now();
    ASSERT_TRUE(mpi.signal(SIGINT));
    const int st = expect_exit(mpi, Ms(10000), "mpirun");
    EXPECT_TRUE(all_gone(mpi, Ms(std::max<int64_t>(0, 10000 - static_cast<int64_t>(seconds_since(t0) * 1000)))));
    std::printf("mpirun exit %d %.2f s after SIGINT, %d tokens generated\n", st, seconds_since(t0),
                generated_tokens(mpi.log()));
}

// Known bug (reported, not fixed here): an interrupted `perplexity` prints the PPL of the windows
// done so far and exits 0, unlike `run` (130). Scripts cannot tell a partial result from a full
// one. Run with --gtest_also_run_disabled_tests to reproduce.
TEST_F(FaultsTest, CtrlCDuringPerplexityExits130) {
    Process& coord = spawn(pipelm_argv(perplexity_args({"--stages", "2"})), "coordinator.log");
    ASSERT_NO_FATAL_FAILURE(wait_then_expect_running(coord, "windows of 256", Ms(1000)));
    ASSERT_TRUE(coord.signal(SIGINT));
    const int st = expect_exit(coord, Ms(5000), "coordinator");
    EXPECT_EQ(st, 130) << coord.log();
}

// Known bug (reported, not fixed here): SIGTERM/SIGINT to a TCP worker that is busy is only
// looked at when its stage has been idle for 1 s, so a worker in a long job keeps running until
// the job ends (tens of seconds here, hours for a large model). Run with
// --gtest_also_run_disabled_tests to reproduce.
TEST_F(FaultsTest, SigtermStopsABusyWorker) {
    Worker& w = worker("worker.log", token_a_, kDemo, {});
    ASSERT_FALSE(HasFailure());
    Process& coord = spawn(pipelm_argv(perplexity_args(over_workers(w.address, token_a_))), "coordinator.log");
    ASSERT_TRUE(w.proc.wait_for_text("job:", kStartTimeout)) << w.proc.log() << coord.log();
    ASSERT_NO_FATAL_FAILURE(wait_then_expect_running(coord, "windows of 256", Ms(1000)));
    ASSERT_TRUE(w.proc.signal(SIGTERM));
    EXPECT_EQ(expect_exit(w.proc, Ms(5000), "worker"), 130) << w.proc.log();
    const int st = expect_exit(coord, Ms(10000), "coordinator");
    EXPECT_NE(st, 0) << coord.log();
    EXPECT_NE(coord.log().find("stage 1"), std::string::npos) << coord.log();
}

// ---- g. model mismatch over TCP --------------------------------------------------------------

TEST_F(FaultsTest, ModelMismatchIsRefusedAtHandshake) {
    // glm4-range has glm4-tiny's shape with other weights (and its own general.name).
    // Both files are named model.gguf: the worker serves its own for the coordinator's path.
    Worker& w = worker("worker.log", token_a_, kRange, {"--once"});
    ASSERT_FALSE(HasFailure());
    const BoundedResult r = logits_over_worker(w.address, token_a_, "x.f32", "coordinator.log", Ms(30000));
    ASSERT_FALSE(r.timed_out) << r.output;
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_EQ(r.status, 7) << "protocol errors are exit code 7:\n" << r.output;
    const std::string line = r.output.substr(std::min(r.output.size(), r.output.find("error:")));
    EXPECT_NE(line.find("model mismatch"), std::string::npos) << r.output;
    EXPECT_NE(line.find("coordinator has " + kTiny), std::string::npos) << r.output;
    EXPECT_NE(line.find("stage 1 has"), std::string::npos) << r.output;
    // Both identities appear, and they differ.
    std::smatch m;
    const std::string s = line;
    EXPECT_TRUE(std::regex_search(s, m, std::regex("\\(id ([0-9a-f]+)\\).*with id ([0-9a-f]+)")) && m[1] != m[2]) << line;
    const int st = expect_exit(w.proc, Ms(10000), "worker");
    EXPECT_NE(st, 0) << w.proc.log();
    EXPECT_NE(w.proc.log().find("model mismatch"), std::string::npos) << w.proc.log();
    EXPECT_TRUE(all_gone(w.proc, Ms(2000)));
}

// Known gap (reported, not fixed here): the model identity hashes metadata and the tensor table,
// not tensor data, so a worker whose file has the same header but other weights is accepted and
// the logits are silently wrong. Run with --gtest_also_run_disabled_tests to reproduce.
TEST_F(FaultsTest, ModelMismatchSameHeaderOtherWeights) {
    // The worker serves a file of the coordinator's file name (model.gguf) elsewhere.
    std::filesystem::create_directory(path("other-weights"));
    const std::string other = path("other-weights/model.gguf");
    std::filesystem::copy_file(kTiny, other);
    {
        // Another "checkpoint": the lowest mantissa byte of every float in the last 30% of the
        // file (weights of the late layers and the output; glm4-tiny is F32) changes.
        std::fstream f(other, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(0, std::ios::end);
        const int64_t size = f.tellg();
        const int64_t from = (size * 7 / 10) & ~int64_t(31);
        std::string bytes(static_cast<size_t>(size - from), '\0');
        f.seekg(from);
        f.read(&bytes[0], static_cast<std::streamsize>(bytes.size()));
        for (size_t i = 0; i < bytes.size(); i += 4) bytes[i] = static_cast<char>(bytes[i] ^ 1);
        f.seekp(from);
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    Worker& w = worker("worker.log", token_a_, other, {"--once"});
    ASSERT_FALSE(HasFailure());
    const BoundedResult r = logits_over_worker(w.address, token_a_, "x.f32", "coordinator.log", Ms(30000));
    ASSERT_FALSE(r.timed_out) << r.output;
    EXPECT_NE(r.status, 0) << "a worker with other weights was accepted:\n" << r.output;
    EXPECT_NE(r.output.find("model mismatch"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace pipelm::testing
