// A small fork/exec helper for tests that drive several pipelm processes at once (workers,
// coordinators, mpirun): spawn with stdout+stderr to a log file, wait with a timeout, signal,
// read the log, wait for a line. Every process is killed when its Process object goes away, so
// a failing assertion never leaves a worker or an MPI rank behind.
//
// Each spawned process gets its own process group and an environment tag
// (PIPELM_TEST_TAG=<test pid>-<n>) that its children inherit (mpirun passes it on to its ranks,
// which OpenMPI puts in process groups of their own): cleanup kills the group and then every
// process that still carries the tag.
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace pipelm::testing {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Exit status as a shell reports it: the exit code, or 128 + signal.
inline int decode_status(int st) {
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
}

inline std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Whole contents of a NUL-separated /proc file (cmdline, environ) as strings.
inline std::vector<std::string> proc_strings(pid_t pid, const char* what) {
    std::vector<std::string> out;
    const std::string s = slurp("/proc/" + std::to_string(pid) + "/" + what);
    size_t b = 0;
    for (size_t i = 0; i < s.size(); ++i)
        if (s[i] == '\0') {
            out.push_back(s.substr(b, i - b));
            b = i + 1;
        }
    if (b < s.size()) out.push_back(s.substr(b));
    return out;
}

inline bool proc_has_env(pid_t pid, const std::string& entry) {
    for (const auto& e : proc_strings(pid, "environ"))
        if (e == entry) return true;
    return false;
}

// Live (non-zombie) processes whose environment contains `entry` (e.g. "PIPELM_TEST_TAG=123-4").
inline std::vector<pid_t> pids_with_env(const std::string& entry) {
    std::vector<pid_t> out;
    DIR* d = ::opendir("/proc");
    if (!d) return out;
    while (dirent* e = ::readdir(d)) {
        char* end = nullptr;
        const long pid = std::strtol(e->d_name, &end, 10);
        if (pid <= 0 || *end != '\0' || pid == ::getpid()) continue;
        // Zombies have an empty environ; they are gone as far as the tests are concerned.
        if (proc_has_env(static_cast<pid_t>(pid), entry)) out.push_back(static_cast<pid_t>(pid));
    }
    ::closedir(d);
    return out;
}

struct SpawnOptions {
    std::string cwd;                    // "" = the test's cwd
    std::vector<std::string> env;       // extra NAME=VALUE entries
    bool allow_core = true;             // raise RLIMIT_CORE so that a crash leaves a core file in cwd
};

class Process {
public:
    Process() = default;
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    Process(Process&& o) noexcept { *this = std::move(o); }
    Process& operator=(Process&& o) noexcept {
        if (this != &o) {
            cleanup();
            pid_ = o.pid_;
            status_ = o.status_;
            log_ = std::move(o.log_);
            tag_ = std::move(o.tag_);
            o.pid_ = -1;
        }
        return *this;
    }
    ~Process() { cleanup(); }

    // argv[0] is looked up on PATH. Returns a Process with pid() < 0 if fork failed; exec failure
    // shows as exit status 127 with the reason in the log.
    static Process spawn(const std::vector<std::string>& argv, const std::string& log_path,
                         const SpawnOptions& so = {}) {
        static int counter = 0;
        Process p;
        p.log_ = log_path;
        p.tag_ = "PIPELM_TEST_TAG=" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
        std::vector<std::string> env_store = so.env;
        env_store.push_back(p.tag_);
        // Build everything the child needs before fork (no allocation after fork).
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        // Environment: ours with the extra entries replacing same-named ones.
        std::vector<std::string> env_all;
        for (char** e = environ; e && *e; ++e) {
            const std::string cur = *e;
            const std::string name = cur.substr(0, cur.find('='));
            bool replaced = false;
            for (const auto& x : env_store) replaced |= x.substr(0, x.find('=')) == name;
            if (!replaced) env_all.push_back(cur);
        }
        for (const auto& x : env_store) env_all.push_back(x);
        std::vector<char*> envp;
        for (auto& e : env_all) envp.push_back(const_cast<char*>(e.c_str()));
        envp.push_back(nullptr);
        const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return p;
        const pid_t pid = ::fork();
        if (pid < 0) {
            ::close(fd);
            return p;
        }
        if (pid == 0) {
            ::setpgid(0, 0);
            // Die with the test process: a crashed or killed test leaves nothing behind.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            const int devnull = ::open("/dev/null", O_RDONLY);
            if (devnull >= 0) ::dup2(devnull, 0);
            // The test may have blocked or ignored signals; the child starts clean.
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD}) ::signal(s, SIG_DFL);
            if (so.allow_core) {
                rlimit rl{};
                ::getrlimit(RLIMIT_CORE, &rl);
                rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 256u << 20 : rl.rlim_max;
                ::setrlimit(RLIMIT_CORE, &rl);
            }
            if (!so.cwd.empty() && ::chdir(so.cwd.c_str()) != 0) ::_exit(126);
            ::execvpe(args[0], args.data(), envp.data());
            const char* msg = "process.h: exec failed: ";
            (void)!::write(2, msg, std::strlen(msg));
            (void)!::write(2, args[0], std::strlen(args[0]));
            (void)!::write(2, "\n", 1);
            ::_exit(127);
        }
        ::close(fd);
        ::setpgid(pid, pid);  // also here, so that the group exists before we may signal it
        p.pid_ = pid;
        return p;
    }

    pid_t pid() const { return pid_; }
    bool started() const { return pid_ > 0; }
    const std::string& tag() const { return tag_; }
    const std::string& log_path() const { return log_; }
    std::string log() const { return slurp(log_); }

    // True while the process has not exited (reaps it when it has).
    bool running() {
        if (pid_ <= 0 || status_) return false;
        int st = 0;
        const pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = decode_status(st);
            return false;
        }
        return r == 0;
    }

    // Exit status (code, or 128 + signal) if the process ends within `timeout`.
    std::optional<int> wait_for(Ms timeout) {
        const auto t0 = Clock::now();
        for (;;) {
            if (!running()) return status_;
            if (Clock::now() - t0 >= timeout) return std::nullopt;
            std::this_thread::sleep_for(Ms(10));
        }
    }
    std::optional<int> status() const { return status_; }

    bool signal(int sig) { return pid_ > 0 && !status_ && ::kill(pid_, sig) == 0; }

    // Waits until the log contains `needle`; false on timeout or if the process exited first
    // (after one last look at the log).
    bool wait_for_text(const std::string& needle, Ms timeout) {
        const auto t0 = Clock::now();
        for (;;) {
            if (log().find(needle) != std::string::npos) return true;
            if (!running()) return log().find(needle) != std::string::npos;
            if (Clock::now() - t0 >= timeout) return false;
            std::this_thread::sleep_for(Ms(10));
        }
    }

    // The first line of the log that contains `needle` ("" if none).
    std::string line_with(const std::string& needle) const {
        const std::string s = log();
        const size_t at = s.find(needle);
        if (at == std::string::npos) return "";
        const size_t b = s.rfind('\n', at);
        const size_t e = s.find('\n', at);
        return s.substr(b == std::string::npos ? 0 : b + 1, e == std::string::npos ? std::string::npos : e - b - 1);
    }

    // Live processes still carrying this process's tag (itself and its descendants).
    std::vector<pid_t> tagged() const { return tag_.empty() ? std::vector<pid_t>{} : pids_with_env(tag_); }

    // SIGKILL to the process, its group and everything that carries its tag; reaps it.
    void kill_all() {
        if (pid_ <= 0) return;
        if (!status_) {
            ::kill(-pid_, SIGKILL);
            ::kill(pid_, SIGKILL);
        }
        for (pid_t q : tagged()) ::kill(q, SIGKILL);
        if (!status_) {
            int st = 0;
            if (::waitpid(pid_, &st, 0) == pid_) status_ = decode_status(st);
        }
        // Descendants may take a moment to die; wait briefly so that the next test starts clean.
        const auto t0 = Clock::now();
        while (!tagged().empty() && Clock::now() - t0 < Ms(2000)) {
            for (pid_t q : tagged()) ::kill(q, SIGKILL);
            std::this_thread::sleep_for(Ms(10));
        }
    }

private:
    void cleanup() {
        if (pid_ > 0) kill_all();
        pid_ = -1;
    }

    pid_t pid_ = -1;
    std::optional<int> status_;
    std::string log_;
    std::string tag_;
};

// Runs a command to completion with a bounded wait; on timeout the process (and its
// descendants) are killed and `timed_out` is set.
struct BoundedResult {
    int status = -1;
    bool timed_out = false;
    double seconds = 0;
    std::string output;
};

inline BoundedResult run_bounded(const std::vector<std::string>& argv, const std::string& log_path, Ms timeout,
                                 const SpawnOptions& so = {}) {
    BoundedResult r;
    const auto t0 = Clock::now();
    Process p = Process::spawn(argv, log_path, so);
    if (!p.started()) {
        r.output = "could not spawn " + (argv.empty() ? std::string("?") : argv[0]);
        return r;
    }
    const auto st = p.wait_for(timeout);
    r.seconds = seconds_since(t0);
    if (!st) {
        r.timed_out = true;
        p.kill_all();
    } else {
        r.status = *st;
    }
    r.output = p.log();
    return r;
}

// Whether `prog` is an executable on PATH.
inline bool on_path(const std::string& prog) {
    const char* path = std::getenv("PATH");
    if (!path) return false;
    std::string p = path;
    size_t b = 0;
    while (b <= p.size()) {
        const size_t e = p.find(':', b);
        const std::string dir = p.substr(b, e == std::string::npos ? std::string::npos : e - b);
        const std::string f = (dir.empty() ? "." : dir) + "/" + prog;
        if (::access(f.c_str(), X_OK) == 0) return true;
        if (e == std::string::npos) break;
        b = e + 1;
    }
    return false;
}

// A fresh directory for one test's logs, token files and cwd (core files would land here).
inline std::string make_temp_dir(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const char* d = ::mkdtemp(buf.data());
    return d ? std::string(d) : std::string("/tmp");
}

// Files named core or core.* in `dir`.
inline std::vector<std::string> core_files(const std::string& dir) {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n == "core" || n.rfind("core.", 0) == 0) out.push_back(dir + "/" + n);
    }
    ::closedir(d);
    return out;
}

// Writes a 64-hex-digit token (derived from `seed`) readable by the owner only.
inline std::string write_token_file(const std::string& path, uint64_t seed) {
    std::string hex;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    static const char* digits = "0123456789abcdef";
    for (int i = 0; i < 64; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        hex += digits[x & 15];
    }
    {
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f << hex << "\n";
    }
    ::chmod(path.c_str(), 0600);
    return path;
}

#ifdef PIPELM_BINARY
// pipelm-specific helpers.

inline void allow_mpirun_as_root() {
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
}

// argv of `pipelm <args...>`.
inline std::vector<std::string> pipelm_argv(std::vector<std::string> args) {
    args.insert(args.begin(), PIPELM_BINARY);
    return args;
}

// argv of `mpirun --oversubscribe --bind-to none -np N pipelm <args...>`.
inline std::vector<std::string> mpirun_argv(int np, const std::vector<std::string>& args) {
    std::vector<std::string> v = {"mpirun", "--oversubscribe", "--bind-to", "none", "-np", std::to_string(np)};
    for (const auto& a : pipelm_argv(args)) v.push_back(a);
    return v;
}

struct Worker {
    Process proc;
    std::string address;  // 127.0.0.1:PORT it listens on ("" if it did not start)
};

// Starts `pipelm worker --listen 127.0.0.1:0 --token-file TOKEN [extra...]` and reads the port
// it picked from its "worker listening on" line.
inline Worker start_worker(const std::string& log_path, const std::string& token_file,
                           const std::vector<std::string>& extra = {}, const SpawnOptions& so = {},
                           Ms timeout = Ms(20000)) {
    std::vector<std::string> args = {"worker", "--listen", "127.0.0.1:0", "--token-file", token_file};
    for (const auto& e : extra) args.push_back(e);
    Worker w;
    w.proc = Process::spawn(pipelm_argv(args), log_path, so);
    const std::string key = "worker listening on ";
    if (!w.proc.wait_for_text(key, timeout)) return w;
    std::string line = w.proc.line_with(key);
    line = line.substr(line.find(key) + key.size());
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    w.address = line;
    return w;
}
#endif  // PIPELM_BINARY

}  // namespace pipelm::testing
