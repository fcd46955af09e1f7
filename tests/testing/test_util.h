// Helpers shared by the model-level tests: run the pipelm binary, read logits files, compare.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace pipelm::testing {

inline std::string data_path(const std::string& rel) { return std::string(PIPELM_TEST_DATA) + "/" + rel; }

struct RunResult {
    int status = -1;  // exit status (or 128 + signal)
    std::string output;  // stdout + stderr
};

// Runs a shell command line, capturing stdout and stderr together.
inline RunResult run_cmd(const std::string& cmd) {
    RunResult r;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    const int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

inline std::string pipelm_cmd(const std::string& args) { return std::string(PIPELM_BINARY) + " " + args; }

inline std::string temp_file(const std::string& name) {
    static std::string dir;
    if (dir.empty()) {
        char tmpl[] = "/tmp/pipelm-test-XXXXXX";
        dir = ::mkdtemp(tmpl);
    }
    return dir + "/" + name;
}

inline std::vector<float> read_f32(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::vector<float> v(bytes.size() / 4);
    if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * 4);
    return v;
}

inline std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

inline std::string ids_arg(const std::vector<int32_t>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
    return s;
}

// ||x_i - r_i|| / ||r_i|| for row i of [n][V] logits.
inline double rel_l2(const float* x, const float* r, int V) {
    double d = 0, n = 0;
    for (int k = 0; k < V; ++k) {
        d += (double(x[k]) - r[k]) * (double(x[k]) - r[k]);
        n += double(r[k]) * r[k];
    }
    return std::sqrt(d / n);
}

inline int argmax(const float* x, int V) {
    int b = 0;
    for (int k = 1; k < V; ++k)
        if (x[k] > x[b]) b = k;
    return b;
}

}  // namespace pipelm::testing
