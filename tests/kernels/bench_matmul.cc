// Micro-benchmark (not a test): decode GEMV bandwidth per weight type against a plain memory
// read loop, and prefill GEMM throughput.
//
//   bench_matmul [--threads 1,2] [--types q4_0,q8_0,...] [--mb 256] [--tokens 512]
//                [--kb N] [--best] [--sweep] [--no-gemv] [--no-gemm] [--gemm-cols N]
//                [--gemv-tokens 1,4,8] [--gemv-cols 4096] [--split N]
//                [--isa auto|scalar|avx2|avx2vnni|avx512|avx512vnni] [--aq none,q8,q8r]
//
// Timing: 1 thread = the thread's CPU time (robust on a shared machine), more = wall time.
// GEMV: one weight of `--mb` MiB (`--gemv-cols` columns, 4096 by default; far larger than the L3)
// streamed per call, n_tokens from `--gemv-tokens` (1, 4, 8 by default; multi-sequence decode and
// short prompts take the same path up to 32 tokens); reports weight GB/s (weight bytes / time).
// `--split N` cuts that weight into N matrices of rows / N rows, each prepared on its own (as a
// model's weights are) and multiplied one after the other: the cost of a decode's many short
// calls (fork-join, cold streams) against one long one of the same bytes.
// GEMM: 1024xC and 7680xC weights (rows x cols, C = --gemm-cols, 1024 by default) times
// `--tokens` tokens; reports GFLOP/s (2*rows*cols*tokens per call). `--aq` lists the
// activation modes to run (none: exact f32 activations; q8: ActQuant::kQ8, rows marked "+q8";
// q8r: kQ8 on the weight repacked at load (Q8_0), rows "+q8r"; types without an integer kernel
// are skipped for q8).
#include <immintrin.h>

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
#include "kernels/quant.h"
#include "runtime/base/thread_pool.h"

using namespace pipelm;
using namespace pipelm::kernels;

namespace {

// With one thread the benchmark times the calling thread's CPU time, so that time slices
// given to other processes on a shared machine do not count; with more threads, wall time.
bool g_cpu_time = false;

double now() {
    if (g_cpu_time) {
        timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool g_use_min = false;  // --kb / --best: best of many runs (for a shared, noisy machine)
int g_rep_mult = 1;

// Median (or with --kb, minimum) seconds of fn() over `reps` runs.
template <class F>
double time_it(F&& fn, int reps) {
    reps *= g_rep_mult;
    std::vector<double> t;
    fn();  // warm up
    for (int i = 0; i < reps; ++i) {
        const double t0 = now();
        fn();
        t.push_back(now() - t0);
    }
    std::sort(t.begin(), t.end());
    return g_use_min ? t[0] : t[t.size() / 2];
}

// Sums n floats as 4 sequential streams read in lockstep (like the 4 row streams of the GEMV);
// one stream alone gets less bandwidth from the prefetchers than several.
__attribute__((target("avx2"))) float read_avx2(const float* p, size_t n) {
    const size_t q = n / 4 / 16 * 16;
    const float *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < q; i += 16) {
        a = _mm256_add_ps(a, _mm256_add_ps(_mm256_load_ps(p0 + i), _mm256_load_ps(p0 + i + 8)));
        b = _mm256_add_ps(b, _mm256_add_ps(_mm256_load_ps(p1 + i), _mm256_load_ps(p1 + i + 8)));
        c = _mm256_add_ps(c, _mm256_add_ps(_mm256_load_ps(p2 + i), _mm256_load_ps(p2 + i + 8)));
        d = _mm256_add_ps(d, _mm256_add_ps(_mm256_load_ps(p3 + i), _mm256_load_ps(p3 + i + 8)));
    }
    a = _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
    float o[8];
    _mm256_storeu_ps(o, a);
    return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}

float read_plain(const float* p, size_t n) {
    float s[8] = {};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; ++l) s[l] += p[i + l];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

// Read bandwidth (GB/s) of a loop summing `bytes` of memory: one contiguous chunk per thread of
// the pool, each read as 4 lockstep streams.
double memory_read_gbs(ThreadPool& pool, size_t bytes) {
    const size_t n = bytes / 4;
    float* buf = static_cast<float*>(std::aligned_alloc(64, n * 4));
    for (size_t i = 0; i < n; ++i) buf[i] = 1.f;
    const bool avx2 = __builtin_cpu_supports("avx2");
    volatile float sink = 0;
    const int nt = pool.size();
    const double t = time_it(
        [&] {
            pool.parallel_for(
                nt,
                [&](int64_t b, int64_t e, int) {
                    for (int64_t c = b; c < e; ++c) {
                        const float* p = buf + n / nt * c;
                        sink = avx2 ? read_avx2(p, n / nt) : read_plain(p, n / nt);
                    }
                },
                1);
        },
        7);
    std::free(buf);
    return bytes / t / 1e9;
}

// rows x cols weight of `type`: 64 quantized random rows repeated (speed does not depend on
// the values).
std::vector<uint8_t> make_weight(GgmlType type, int64_t rows, int64_t cols) {
    const size_t rb = ggml_row_bytes(type, cols);
    std::vector<uint8_t> w(rb * rows);
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.f, 0.02f);
    std::vector<float> src(cols);
    const int64_t uniq = std::min<int64_t>(rows, 64);
    for (int64_t r = 0; r < uniq; ++r) {
        for (auto& v : src) v = nd(rng);
        quantize_row(type, src.data(), w.data() + r * rb, cols);
    }
    for (int64_t r = uniq; r < rows; ++r) std::memcpy(w.data() + r * rb, w.data() + (r % uniq) * rb, rb);
    return w;
}

// An activation mode of the benchmark: none, q8 (kQ8 on the file layout), q8r (kQ8 on the
// weight repacked at load, Q8_0 only).
struct Mode {
    ActQuant aq;
    bool repack;
    const char* suffix;
};
const Mode kModeNone{ActQuant::kNone, false, ""}, kModeQ8{ActQuant::kQ8, false, "+q8"}, kModeQ8r{ActQuant::kQ8, true, "+q8r"};

Matrix prepare(GgmlType type, const std::vector<uint8_t>& w, int64_t rows, int64_t cols, bool repack = false) {
    WeightView v;
    v.type = type;
    v.data = w.data();
    v.rows = rows;
    v.cols = cols;
    v.row_bytes = ggml_row_bytes(type, cols);
    Matrix::Options opt;
    opt.repack_q8 = repack;
    return Matrix::prepare(v, opt);
}

// Skips modes that do not apply to `type` (no integer kernel; nothing to repack).
bool applies(const Mode& md, GgmlType type, const Matrix& repacked) {
    if (md.aq == ActQuant::kQ8 && !act_quant_supported(type)) return false;
    return !md.repack || repacked.packed() != nullptr;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<int> threads = {1, 2};
    std::vector<std::string> types = {"f32",    "f16",  "bf16", "q8_0", "q6_K", "q5_K",  "q5_0",
                                      "q5_1",   "q4_K", "q4_0", "q4_1", "iq4_nl", "iq4_xs"};
    std::vector<std::string> gemm_types = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K", "iq4_xs"};
    size_t mb = 256;
    size_t kb = 0;  // GEMV weight size in KiB instead of --mb (fits in cache: measures compute)
    int64_t tokens = 512;
    int64_t gemm_cols = 1024;
    int64_t gemv_cols = 4096;
    int64_t split_n = 1;  // --split: the GEMV weight as this many matrices, called in turn
    std::vector<int64_t> gemv_tokens = {1, 4, 8};
    bool gemv = true, gemm = true, sweep = false;
    std::vector<Mode> aqs = {kModeNone, kModeQ8, kModeQ8r};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "--threads") {
            threads.clear();
            for (const auto& t : split(next())) threads.push_back(std::atoi(t.c_str()));
        } else if (a == "--types") {
            types = split(next());
            gemm_types = types;
        } else if (a == "--mb") {
            mb = std::strtoull(next().c_str(), nullptr, 10);
        } else if (a == "--kb") {
            kb = std::strtoull(next().c_str(), nullptr, 10);
            g_use_min = true;
            g_rep_mult = 30;
        } else if (a == "--best") {
            g_use_min = true;
            g_rep_mult = std::max(g_rep_mult, 5);
        } else if (a == "--sweep") {
            sweep = true;
        } else if (a == "--tokens") {
            tokens = std::atoll(next().c_str());
        } else if (a == "--gemm-cols") {
            gemm_cols = std::atoll(next().c_str());
        } else if (a == "--gemv-cols") {
            gemv_cols = std::atoll(next().c_str());
        } else if (a == "--split") {
            split_n = std::atoll(next().c_str());
        } else if (a == "--gemv-tokens") {
            gemv_tokens.clear();
            for (const auto& t : split(next())) gemv_tokens.push_back(std::atoll(t.c_str()));
        } else if (a == "--aq") {
            aqs.clear();
            for (const auto& m : split(next())) aqs.push_back(m == "q8r" ? kModeQ8r : m == "q8" ? kModeQ8 : kModeNone);
        } else if (a == "--no-gemv") {
            gemv = false;
        } else if (a == "--no-gemm") {
            gemm = false;
        } else if (a == "--isa") {
            if (!force_cpu_isa(next().c_str())) {
                std::fprintf(stderr, "ISA not available\n");
                return 2;
            }
        } else {
            std::fprintf(stderr, "usage: %s [--threads 1,2] [--types q4_0,...] [--mb N] [--tokens N] "
                                 "[--kb N] [--best] [--no-gemv] [--no-gemm] [--gemm-cols N] [--gemv-tokens 1,4,8] [--gemv-cols N] [--split N] [--isa auto|scalar|avx2|avx2vnni|avx512|avx512vnni] [--aq none,q8,q8r]\n", argv[0]);
            return 2;
        }
    }
    std::printf("isa: %s\n", cpu_isa_name());
    if (gemv) {
        const int64_t cols = gemv_cols;
        if (cols < 256 || cols % 256 != 0 || gemv_tokens.empty() ||
            std::any_of(gemv_tokens.begin(), gemv_tokens.end(), [](int64_t n) { return n < 1 || n > 4096; })) {
            std::fprintf(stderr, "--gemv-cols must be a positive multiple of 256 and --gemv-tokens 1..4096\n");
            return 2;
        }
        if (split_n < 1) {
            std::fprintf(stderr, "--split must be at least 1\n");
            return 2;
        }
        const int64_t max_n = *std::max_element(gemv_tokens.begin(), gemv_tokens.end());
        const size_t bytes = kb ? kb << 10 : mb << 20;
        std::printf("\n== decode GEMV, %zu KiB weight, %lld columns, %lld call(s) ==\n", bytes >> 10, (long long)cols,
                    (long long)split_n);
        for (int nt : threads) {
            ThreadPool pool(nt);
            g_cpu_time = nt == 1;
            std::printf("threads %d: memory read loop %.2f GB/s\n", nt, memory_read_gbs(pool, bytes));
        }
        std::printf("%-10s %7s", "type", "B/elem");
        const std::vector<int64_t>& ns = gemv_tokens;
        for (int nt : threads)
            for (int64_t n : ns) std::printf("  n=%lld %dT GB/s", (long long)n, nt);
        std::printf("\n");
        for (const auto& name : types) {
            const GgmlType type = parse_ggml_type(name);
            const int64_t rows = std::max<int64_t>(8 * split_n, static_cast<int64_t>(bytes / ggml_row_bytes(type, cols)));
            const int64_t part_rows = rows / split_n;
            const auto w = make_weight(type, rows, cols);
            // --split: part i is rows [i * part_rows, (i + 1) * part_rows) of w, its own Matrix (and
            // its own repacked copy); the file layout parts are copies too, so no part follows
            // another in memory.
            std::vector<std::vector<uint8_t>> wp(static_cast<size_t>(split_n));
            std::vector<Matrix> m0, mr;
            const size_t rb = ggml_row_bytes(type, cols);
            for (int64_t i = 0; i < split_n; ++i) {
                const uint8_t* src = w.data() + static_cast<size_t>(i * part_rows) * rb;
                if (split_n > 1) wp[i].assign(src, src + static_cast<size_t>(part_rows) * rb);
                const std::vector<uint8_t>& wi = split_n > 1 ? wp[i] : w;
                m0.push_back(prepare(type, wi, part_rows, cols));
                mr.push_back(prepare(type, wi, part_rows, cols, true));
            }
            std::vector<float> x(max_n * cols, 0.01f), y(max_n * rows);
            for (const Mode& md : aqs) {
            if (!applies(md, type, mr[0])) continue;
            const std::vector<Matrix>& m = md.repack ? mr : m0;
            const ActQuant aq = md.aq;
            std::printf("%-10s %7.4f", (name + md.suffix).c_str(),
                        double(ggml_row_bytes(type, cols)) / cols);
            for (int nt : threads) {
                ThreadPool pool(nt);
                g_cpu_time = nt == 1;
                for (int64_t n : ns) {
                    const double t = time_it([&] {
                        for (int64_t i = 0; i < split_n; ++i)
                            matmul(m[i], x.data(), cols, y.data() + i * part_rows, rows, n, pool, aq);
                    }, 7);
                    std::printf("  %13.2f", double(rb * part_rows * split_n) / t / 1e9);
                    if (kb) std::printf(" (%4.2f el/ns)", double(part_rows * split_n) * cols / t / 1e9);
                }
            }
            std::printf("\n");
            std::fflush(stdout);
            }
        }
    }
    if (sweep) {  // n_tokens = 1..16 on an in-cache weight: where GEMV and GEMM cross over
        const int64_t cols = 4096, rows = 64;
        g_cpu_time = true;
        g_use_min = true;
        g_rep_mult = 10;
        ThreadPool pool(1);
        std::printf("\n== n_tokens sweep, %lldx%lld weight, 1 thread, GFLOP/s ==\n%-10s", (long long)rows,
                    (long long)cols, "type");
        for (int64_t n = 1; n <= 16; ++n) std::printf(" %5lld", (long long)n);
        std::printf("\n");
        for (const auto& name : types) {
            const GgmlType type = parse_ggml_type(name);
            const auto w = make_weight(type, rows, cols);
            const Matrix m0 = prepare(type, w, rows, cols), mr = prepare(type, w, rows, cols, true);
            std::vector<float> x(16 * cols, 0.01f), y(16 * rows);
            for (const Mode& md : aqs) {
                if (!applies(md, type, mr)) continue;
                const Matrix& m = md.repack ? mr : m0;
                const ActQuant aq = md.aq;
                std::printf("%-10s", (name + md.suffix).c_str());
                for (int64_t n = 1; n <= 16; ++n) {
                    const double t = time_it([&] { matmul(m, x.data(), cols, y.data(), rows, n, pool, aq); }, 5);
                    std::printf(" %5.1f", 2.0 * rows * cols * n / t / 1e9);
                }
                std::printf("\n");
            }
        }
    }
    if (gemm) {
        std::printf("\n== prefill GEMM, %lld tokens, GFLOP/s ==\n", (long long)tokens);
        std::printf("%-10s %-11s", "type", "rows x cols");
        for (int nt : threads) std::printf("  %dT GFLOP/s", nt);
        std::printf("\n");
        for (const auto& name : gemm_types) {
            const GgmlType type = parse_ggml_type(name);
            for (int64_t rows : {1024, 7680}) {
                const int64_t cols = gemm_cols;
                const auto w = make_weight(type, rows, cols);
                const Matrix m0 = prepare(type, w, rows, cols), mr = prepare(type, w, rows, cols, true);
                std::vector<float> x(tokens * cols), y(tokens * rows);
                std::mt19937 rng(2);
                std::normal_distribution<float> nd(0.f, 1.f);
                for (auto& v : x) v = nd(rng);
                for (const Mode& md : aqs) {
                    if (!applies(md, type, mr)) continue;
                    const Matrix& m = md.repack ? mr : m0;
                    const ActQuant aq = md.aq;
                    std::printf("%-10s %5lldx%-5lld", (name + md.suffix).c_str(),
                                (long long)rows, (long long)cols);
                    for (int nt : threads) {
                        ThreadPool pool(nt);
                        g_cpu_time = nt == 1;
                        const double t =
                            time_it([&] { matmul(m, x.data(), cols, y.data(), rows, tokens, pool, aq); }, 5);
                        std::printf("  %11.1f", 2.0 * rows * cols * tokens / t / 1e9);
                    }
                    std::printf("\n");
                    std::fflush(stdout);
                }
            }
        }
    }
    return 0;
}
