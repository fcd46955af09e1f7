// Helpers of the `pipelm serve` / `pipelm chat` end-to-end tests: start a server in one of the
// three modes (2 in-process stages, `mpirun -np 2`, a coordinator with one TCP worker) on a free
// port of 127.0.0.1, talk HTTP to it (cpp-httplib's client), run the npm `openai` client
// (tests/serve/client.mjs) against it, and find out whether that client can run at all.
#pragma once
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <string>
#include <vector>

#include "tests/testing/process.h"

namespace pipelm::testing {

using json = nlohmann::json;

inline const std::string kDemo = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
inline const std::string kModelId = "glm4-demo-f16";
const Ms kServeStart(60000);  // until "serve: ready" (mpirun and a TCP worker included)

enum class ServeMode { kInProcess, kMpi, kTcp };

inline const char* mode_label(ServeMode m) {
    switch (m) {
        case ServeMode::kInProcess: return "in-process";
        case ServeMode::kMpi: return "mpi";
        case ServeMode::kTcp: return "tcp";
    }
    return "?";
}

inline void PrintTo(ServeMode m, std::ostream* os) { *os << mode_label(m); }

struct Server {
    Process proc;
    Worker worker;  // TCP mode
    int port = 0;
    std::string base() const { return "http://127.0.0.1:" + std::to_string(port); }
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(120, 0);
        return c;
    }
};

// The port from "serve: listening on http://127.0.0.1:PORT"; 0 if absent.
inline int listening_port(const std::string& log) {
    std::smatch m;
    static const std::regex re("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    return std::regex_search(log, m, re) ? std::stoi(m[1]) : 0;
}

// Starts `pipelm serve -m demo --port 0 --threads 1 [extra]` in `mode` with its logs in `dir`;
// waits for "serve: ready" unless wait_ready is false (then only for the port).
inline Server start_server(ServeMode mode, const std::string& dir, const std::vector<std::string>& extra,
                           bool wait_ready = true) {
    Server s;
    std::vector<std::string> args = {"serve", "-m", kDemo, "--port", "0", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    if (mode == ServeMode::kInProcess) {
        args.insert(args.end(), {"--stages", "2"});
        s.proc = Process::spawn(pipelm_argv(args), dir + "/serve.log");
    } else if (mode == ServeMode::kMpi) {
        allow_mpirun_as_root();
        s.proc = Process::spawn(mpirun_argv(2, args), dir + "/serve.log");
    } else {
        const std::string token = write_token_file(dir + "/token", 15);
        s.worker = start_worker(dir + "/worker.log", token, {"--threads", "1", "-m", kDemo});
        if (s.worker.address.empty()) return s;
        args.insert(args.end(), {"--workers", s.worker.address, "--token-file", token});
        s.proc = Process::spawn(pipelm_argv(args), dir + "/serve.log");
    }
    const std::string key = wait_ready ? "serve: ready" : "listening on http://";
    if (s.proc.wait_for_text(key, kServeStart)) s.port = listening_port(s.proc.log());
    return s;
}

// Why the openai client cannot run here ("" when it can). Installs the pinned package with
// `npm ci` when node_modules lacks it (as scripts/setup.sh does), under a lock so that tests
// running at once install it once.
inline std::string openai_client_missing() {
    static const std::string why = [] {
        const std::string root = std::string(PIPELM_SOURCE_DIR) + "/scripts/clients";
        const std::string pkg = root + "/node_modules/openai/package.json";
        if (!on_path("node")) return std::string("node is not on PATH (install Node.js >= 20 to run the openai-client tests)");
        if (::access(pkg.c_str(), R_OK) == 0) return std::string();
        if (!on_path("npm")) return std::string("the npm package openai is not installed and npm is not on PATH");
        const int lock = ::open((root + "/package.json").c_str(), O_RDONLY | O_CLOEXEC);
        if (lock >= 0) ::flock(lock, LOCK_EX);
        std::string out;
        if (::access(pkg.c_str(), R_OK) != 0) {
            SpawnOptions so;
            so.cwd = root;
            const BoundedResult r = run_bounded({"npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"},
                                                make_temp_dir("pipelm-npm") + "/npm.log", Ms(180000), so);
            out = r.output;
        }
        if (lock >= 0) ::close(lock);
        if (::access(pkg.c_str(), R_OK) == 0) return std::string();
        while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
        return "the npm package openai is not installed and `npm ci` failed (no npm registry?): " +
               out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
    }();
    return why;
}

// Runs tests/serve/client.mjs SCENARIO against the server; the JSON it prints (null on failure,
// with the output in *log).
inline json run_client(const Server& s, const std::vector<std::string>& args, const std::string& log_path,
                       std::string* log, Ms timeout = Ms(120000)) {
    std::vector<std::string> argv = {"node", std::string(PIPELM_SOURCE_DIR) + "/tests/serve/client.mjs"};
    argv.push_back(args.at(0));
    argv.push_back(s.base());
    argv.push_back(kModelId);
    argv.insert(argv.end(), args.begin() + 1, args.end());
    const BoundedResult r = run_bounded(argv, log_path, timeout);
    *log = r.output;
    if (r.timed_out || r.status != 0) return json();
    const size_t at = r.output.rfind("\n{");
    return json::parse(r.output.substr(at == std::string::npos ? 0 : at + 1), nullptr, false);
}

// POST of a JSON body; the response (status -1 when the connection failed).
inline httplib::Result post(httplib::Client& c, const std::string& path, const std::string& body,
                            const httplib::Headers& h = {}) {
    return c.Post(path.c_str(), h, body, "application/json");
}

// The value of a Prometheus sample line "name{labels} value" (or "name value"); -1 if absent.
inline double metric_value(const std::string& text, const std::string& sample) {
    size_t at = 0;
    while ((at = text.find(sample + " ", at)) != std::string::npos) {
        if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + sample.size() + 1));
        at += sample.size();
    }
    return -1;
}

// Resident set of a process, kB (VmRSS).
inline long rss_kb(pid_t pid) {
    const std::string s = slurp("/proc/" + std::to_string(pid) + "/status");
    const size_t at = s.find("VmRSS:");
    return at == std::string::npos ? -1 : std::stol(s.substr(at + 6));
}

}  // namespace pipelm::testing
