// Micro-benchmark (not a test): CPU attention (kernels::attention) and SwiGLU (kernels::swiglu)
// at GLM-4 shapes.
//
//   bench_attention [--threads 2] [--tokens 512] [--ctx 0] [--heads 8] [--kv-heads 1] [--hd 128]
//                   [--types f32,f16,q8_0] [--reps 5] [--isa auto|scalar|avx2] [--ff 7680]
//
// Prefill (default): n_tokens tokens of one sequence at positions 0..n_tokens-1, token t sees
// rows [0, t+1). --ctx C > 0: decode-like, every token sees C rows. Reports the best of --reps
// runs: wall time with several threads, the calling thread's CPU time with one; GFLOP/s counts
// 4 * head_dim * n_head * sum_t n_kv[t] (K·Q and softmax·V, 2 flops per multiply-add).
// SwiGLU: n_tokens x --ff elements; reports ns per element.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "runtime/base/ggml_types.h"
#include "runtime/base/thread_pool.h"
#include "tests/testing/attention_args.h"

using namespace pipelm;

namespace {

bool g_cpu_time = false;

double now() {
    if (g_cpu_time) {
        timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double best_of(F&& fn, int reps) {
    fn();  // warm up
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
        const double t0 = now();
        fn();
        best = std::min(best, now() - t0);
    }
    return best;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
}

GgmlType type_of(const std::string& s) {
    if (s == "f32") return GgmlType::kF32;
    if (s == "f16") return GgmlType::kF16;
    if (s == "q8_0") return GgmlType::kQ8_0;
    std::fprintf(stderr, "bench_attention: --types: unknown KV type '%s' (f32, f16, q8_0)\n", s.c_str());
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, n_tokens = 512, ctx = 0, n_head = 8, n_head_kv = 1, hd = 128, reps = 5, n_ff = 7680;
    std::string types = "f32,f16,q8_0", isa = "auto";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "bench_attention: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--threads") threads = std::atoi(next().c_str());
        else if (a == "--tokens") n_tokens = std::atoi(next().c_str());
        else if (a == "--ctx") ctx = std::atoi(next().c_str());
        else if (a == "--heads") n_head = std::atoi(next().c_str());
        else if (a == "--kv-heads") n_head_kv = std::atoi(next().c_str());
        else if (a == "--hd") hd = std::atoi(next().c_str());
        else if (a == "--types") types = next();
        else if (a == "--reps") reps = std::atoi(next().c_str());
        else if (a == "--isa") isa = next();
        else if (a == "--ff") n_ff = std::atoi(next().c_str());
        else {
            std::fprintf(stderr, "bench_attention: unknown flag %s\n", a.c_str());
            return 2;
        }
    }
    if (!kernels::force_cpu_isa(isa.c_str())) {
        std::fprintf(stderr, "bench_attention: --isa %s is not available on this CPU\n", isa.c_str());
        return 2;
    }
    g_cpu_time = threads == 1;
    ThreadPool pool(threads);
    const int64_t kvw = static_cast<int64_t>(n_head_kv) * hd, qw = static_cast<int64_t>(n_head) * hd;
    const int n_rows = ctx > 0 ? ctx : n_tokens;
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> q(n_tokens * qw), kf(n_rows * kvw), vf(n_rows * kvw), out(n_tokens * qw);
    for (auto& x : q) x = nd(rng);
    for (auto& x : kf) x = nd(rng);
    for (auto& x : vf) x = nd(rng);
    std::vector<int32_t> n_kv(n_tokens);
    double pairs = 0;
    for (int t = 0; t < n_tokens; ++t) {
        n_kv[t] = ctx > 0 ? ctx : t + 1;
        pairs += n_kv[t];
    }
    const double flops = 4.0 * hd * n_head * pairs;
    std::printf("attention: %d tokens, %s, heads %d/%d, head_dim %d, %d thread(s), isa %s\n", n_tokens,
                ctx > 0 ? ("ctx " + std::to_string(ctx)).c_str() : "causal prefill", n_head, n_head_kv, hd, threads,
                kernels::cpu_isa_name());
    for (const auto& ts : split(types)) {
        const GgmlType type = type_of(ts);
        const size_t rb = ggml_row_bytes(type, kvw);
        std::vector<uint8_t> k(n_rows * rb), v(n_rows * rb);
        for (int j = 0; j < n_rows; ++j) {
            kernels::store_row(type, kf.data() + j * kvw, k.data() + j * rb, kvw);
            kernels::store_row(type, vf.data() + j * kvw, v.data() + j * rb, kvw);
        }
        const testing::SharedRowsAttention att(q.data(), out.data(), n_head, n_head_kv, hd, type, k.data(), type, v.data(),
                                               n_kv);
        const double s = best_of([&] { kernels::attention(att.args, pool); }, reps);
        std::printf("  kv %-5s %9.3f ms  %7.2f GFLOP/s\n", ts.c_str(), s * 1e3, flops / s * 1e-9);
    }
    std::vector<float> gu(static_cast<size_t>(n_tokens) * 2 * n_ff), m(static_cast<size_t>(n_tokens) * n_ff);
    for (auto& x : gu) x = 3.f * nd(rng);
    const double s = best_of([&] { kernels::swiglu(gu.data(), m.data(), n_tokens, n_ff, pool); }, reps);
    std::printf("swiglu: %d x %d  %9.3f ms  %6.3f ns/element\n", n_tokens, n_ff, s * 1e3,
                s * 1e9 / (double(n_tokens) * n_ff));
    return 0;
}
