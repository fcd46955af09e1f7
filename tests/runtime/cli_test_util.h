// Runs the pipelm executable as a user would and checks how it fails: a normal exit with the
// documented code and exactly one stderr line "error: ..." naming the file or flag at fault.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pipelm::cli_test {

inline std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct RunResult {
    bool exited = false;
    int exit_code = -1;
    bool signaled = false;
    int signal = 0;
    bool core_dumped = false;
    bool timed_out = false;
    std::string out, err;
};

// Runs `argv` (argv[0] looked up on PATH: mpirun, ...) in directory `cwd` (where a core file would
// land), stdout and stderr to files there. Kills it after `timeout_s`. A non-zero `address_space`
// caps the child's virtual memory (RLIMIT_AS, bytes): thread stacks then run out after a hundred
// or so threads. run_pipelm below runs PIPELM_BINARY with `args`.
inline RunResult run_command(const std::vector<std::string>& argv_s, const std::string& cwd, double timeout_s = 120,
                             size_t address_space = 0) {
    const std::string out_path = cwd + "/.stdout", err_path = cwd + "/.stderr";
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        if (::chdir(cwd.c_str()) != 0) ::_exit(126);
        if (address_space) {
            const rlimit rl{address_space, address_space};
            if (::setrlimit(RLIMIT_AS, &rl) != 0) ::_exit(126);
        }
        const int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0) ::_exit(126);
        ::close(o);
        ::close(e);
        ::execvp(argv[0], argv.data());
        ::_exit(127);
    }
    RunResult r;
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
        const pid_t w = ::waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) throw std::runtime_error("waitpid failed");
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            r.timed_out = true;
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    r.exited = WIFEXITED(status);
    if (r.exited) r.exit_code = WEXITSTATUS(status);
    r.signaled = WIFSIGNALED(status);
    if (r.signaled) {
        r.signal = WTERMSIG(status);
        r.core_dumped = WCOREDUMP(status);
    }
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    std::remove(out_path.c_str());
    std::remove(err_path.c_str());
    return r;
}

inline RunResult run_pipelm(const std::vector<std::string>& args, const std::string& cwd, double timeout_s = 120,
                            size_t address_space = 0) {
    std::vector<std::string> argv = {PIPELM_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, cwd, timeout_s, address_space);
}

inline std::vector<std::string> core_files(const std::string& dir) {
    std::vector<std::string> cores;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        const std::string n = e.path().filename().string();
        if (n == "core" || n.rfind("core.", 0) == 0 || n.rfind("vgcore", 0) == 0) cores.push_back(n);
    }
    return cores;
}

// The run failed the way a user error should: a normal exit with `code`, one "error:" line on
// stderr containing every word, nothing that looks like a crash.
inline ::testing::AssertionResult clean_error(const RunResult& r, const std::string& cwd, int code,
                                       const std::vector<std::string>& words) {
    auto fail = [&]() {
        return ::testing::AssertionFailure() << "\n--- stderr ---\n" << r.err << "--- stdout ---\n" << r.out << "---\n";
    };
    if (r.timed_out) return fail() << "timed out";
    if (!r.exited) return fail() << "killed by signal " << r.signal << (r.core_dumped ? " (core dumped)" : "");
    if (r.exit_code == 0) return fail() << "exit status 0";
    if (r.exit_code != code) return fail() << "exit status " << r.exit_code << ", want " << code;
    const auto cores = core_files(cwd);
    if (!cores.empty()) return fail() << "core file " << cores[0];
    std::vector<std::string> error_lines;
    std::istringstream ss(r.err);
    for (std::string line; std::getline(ss, line);)
        if (line.rfind("error:", 0) == 0) error_lines.push_back(line);
    if (error_lines.size() != 1) return fail() << error_lines.size() << " lines start with 'error:'";
    for (const auto& w : words)
        if (error_lines[0].find(w) == std::string::npos) return fail() << "the error line lacks '" << w << "'";
    for (const char* bad : {"terminate called", "AddressSanitizer", "LeakSanitizer", "runtime error:", "Aborted",
                            "Segmentation", "what():"})
        if (r.err.find(bad) != std::string::npos) return fail() << "stderr contains '" << bad << "'";
    return ::testing::AssertionSuccess() << error_lines[0];
}

// Exit codes of launcher/main.cc.
constexpr int kExitInvalidArgument = 2;
constexpr int kExitFormat = 3;
constexpr int kExitUnsupported = 4;
constexpr int kExitIo = 5;
constexpr int kExitMemory = 6;
constexpr int kExitNoDevice = 9;

// The sanitizers reserve terabytes of address space: an RLIMIT_AS cap cannot apply to them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
constexpr size_t kOneGiB = size_t(1) << 30;

}  // namespace pipelm::cli_test
