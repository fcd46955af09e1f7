// CPU ops of a GLM-4 layer against plain FP64 references on odd sizes, and sampler determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include <sys/mman.h>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/thread_pool.h"
#include "runtime/sampling/sampler.h"
#include "tests/testing/attention_args.h"

namespace pipelm {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.f) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(g);
    return v;
}

// FP32 results vs FP64 references: relative error bound 1e-5 (a few FP32 ulps over sums of
// up to a few thousand terms).
// parallel_for_balanced covers every index exactly once, in grain-aligned chunks, whatever
// the sizes, grains and thread counts (including a thread that is much slower than the others,
// whose remaining chunks the others must take over), and rethrows a chunk's exception.
TEST(ThreadPool, BalancedCoversEachIndexOnceAndStealsFromSlowThreads) {
    for (int threads : {1, 2, 3, 5}) {
        ThreadPool pool(threads);
        for (int64_t n : {1, 2, 15, 16, 17, 100, 1000, 4099}) {
            for (int64_t grain : {1, 4, 16}) {
                std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
                std::vector<std::atomic<int64_t>> by_thread(static_cast<size_t>(threads));
                std::atomic<int64_t> done{0};
                bool first = true;
                pool.parallel_for_balanced(
                    n,
                    [&](int64_t b, int64_t e, int t) {
                        ASSERT_TRUE(b < e && b % grain == 0 && (e % grain == 0 || e == n)) << b << " " << e;
                        if (t == 0 && threads > 1 && first) {
                            // A stalled thread: its first chunk waits until the others have done
                            // everything else (bounded, so a starved machine cannot hang the test).
                            first = false;
                            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
                            while (done.load() < n - (e - b) && std::chrono::steady_clock::now() < deadline)
                                std::this_thread::yield();
                        }
                        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
                        by_thread[static_cast<size_t>(t)] += e - b;
                        done += e - b;
                    },
                    grain);
                for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "index " << i;
                // The slow caller thread (0) hands most of its share to the others.
                if (threads > 1 && n / grain >= 64) {
                    EXPECT_LT(by_thread[0].load(), n / threads) << "n " << n << " grain " << grain;
                }
            }
        }
        EXPECT_THROW(pool.parallel_for_balanced(64, [](int64_t b, int64_t, int) {
            if (b == 0) throw std::runtime_error("chunk failed");
        }), std::runtime_error);
    }
}

// share_begin names the share parallel_for hands each thread (the matmul's idle prefetch aims at
// it), for every size, grain and thread count, including threads without a share; and the shares
// it names are an even split: grain-aligned, in order, covering [0, n), sizes within one grain.
TEST(ThreadPool, ShareBeginIsWhereEachThreadsShareStarts) {
    for (int threads : {1, 2, 3, 5}) {
        ThreadPool pool(threads);
        for (int64_t n : {1, 2, 15, 16, 17, 100, 1000, 4099}) {
            for (int64_t grain : {1, 4, 16}) {
                std::vector<int64_t> begin(static_cast<size_t>(threads), n), end(static_cast<size_t>(threads), n);
                pool.parallel_for(n, [&](int64_t b, int64_t e, int t) {
                    begin[static_cast<size_t>(t)] = b;
                    end[static_cast<size_t>(t)] = e;
                }, grain);
                for (int t = 0; t < threads; ++t) {
                    EXPECT_EQ(pool.share_begin(n, grain, t), begin[static_cast<size_t>(t)])
                        << "n " << n << " grain " << grain << " thread " << t << " of " << threads;
                    if (begin[static_cast<size_t>(t)] < n) {
                        EXPECT_EQ(pool.share_begin(n, grain, t + 1), end[static_cast<size_t>(t)]);
                    }
                }
                const int64_t n_grains = (n + grain - 1) / grain;
                const int nt = static_cast<int>(std::min<int64_t>(threads, n_grains));
                EXPECT_EQ(pool.share_begin(n, grain, 0), 0);
                for (int t = 0; t < threads; ++t) {
                    const int64_t b = pool.share_begin(n, grain, t), e = pool.share_begin(n, grain, t + 1);
                    ASSERT_LE(b, e);
                    if (t >= nt) {
                        EXPECT_EQ(b, n);
                        continue;
                    }
                    EXPECT_EQ(b % grain, 0);
                    const int64_t g = (e - b + grain - 1) / grain;  // grains of share t
                    EXPECT_TRUE(g == n_grains / nt || g == n_grains / nt + 1) << "share " << t << ": " << g << " grains";
                }
            }
        }
    }
}

// set_idle_prefetch: a thread prefetches its range once its part of the region it was set for is
// done (thread 0 while it waits for the others, a worker until the next region starts), stops as
// soon as there is work again, and never takes the range up in a later region. The range is 1 TiB
// of address space reserved PROT_NONE (prefetches of it are dropped and never fault): a thread that
// did not stop would take ~6 s to get through it (64 GiB took 0.4 s on a Zen 5 core), far longer
// than the test takes to start the next region.
TEST(ThreadPool, IdlePrefetchFillsTheWaitOnlyAndStopsForWork) {
    const size_t big = size_t{1} << 40;
    void* range = mmap(nullptr, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(range, MAP_FAILED);
    auto wait_for = [](const std::function<bool()>& done) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!done() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    ThreadPool pool(2);
    // A worker: prefetches after its job, while the caller is away, until the next region.
    pool.set_idle_prefetch(1, range, big);
    pool.run_on_all([](int) {});
    wait_for([&] { return pool.idle_prefetched(1) > 0; });
    EXPECT_GT(pool.idle_prefetched(1), 0u);
    pool.run_on_all([](int) {});  // work again: the worker stops before it takes this job
    const uint64_t worker = pool.idle_prefetched(1);
    EXPECT_LT(worker, big);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(pool.idle_prefetched(1), worker) << "the range was taken up again by a later region";
    // The caller: prefetches while the worker is still busy, and returns when the worker is done.
    pool.set_idle_prefetch(0, range, big);
    std::atomic<bool> release{false};
    std::thread releaser([&] {
        wait_for([&] { return pool.idle_prefetched(0) > 0; });
        release = true;
    });
    pool.run_on_all([&](int t) {
        if (t == 1) wait_for([&] { return release.load(); });
    });
    releaser.join();
    const uint64_t caller = pool.idle_prefetched(0);
    EXPECT_GT(caller, 0u);
    EXPECT_LT(caller, big);
    pool.run_on_all([](int) {});
    EXPECT_EQ(pool.idle_prefetched(0), caller);
    // Out-of-range threads and null ranges are ignored; a one-thread pool never prefetches.
    pool.set_idle_prefetch(2, range, big);
    pool.set_idle_prefetch(-1, range, big);
    pool.set_idle_prefetch(1, nullptr, big);
    pool.run_on_all([](int) {});
    EXPECT_EQ(pool.idle_prefetched(1), worker);
    ThreadPool one(1);
    one.set_idle_prefetch(0, range, big);
    one.run_on_all([](int) {});
    EXPECT_EQ(one.idle_prefetched(0), 0u);
    munmap(range, big);
}

TEST(Ops, RmsNormMatchesFp64) {
    ThreadPool pool(2);
    for (int64_t n : {1, 31, 4097}) {
        const int64_t rows = 3;
        auto x = random_vec(rows * n, 1, 3.f), w = random_vec(n, 2);
        std::vector<float> y(rows * n);
        kernels::rms_norm(x.data(), n, w.data(), y.data(), n, rows, n, 1e-5f, pool);
        for (int64_t r = 0; r < rows; ++r) {
            double ss = 0;
            for (int64_t i = 0; i < n; ++i) ss += double(x[r * n + i]) * x[r * n + i];
            const double s = 1.0 / std::sqrt(ss / n + 1e-5);
            for (int64_t i = 0; i < n; ++i)
                EXPECT_NEAR(y[r * n + i], x[r * n + i] * s * w[i], 1e-5 * (std::fabs(x[r * n + i] * s * w[i]) + 1e-3));
        }
    }
}

// The bits of kernels/ops.h's order (eight double lanes, a fixed tree, the tail): a stage of any
// build, ISA or split normalizes a row the same way. Positive squares sum almost the same in any
// order, so the row is built to tell orders apart: 2^24 and 109 * 2^12 put the mean exactly on a
// float rounding midpoint (2^38 + 109^2 * 2^14, which ties to the even float below) when the 0.17s
// are lost one by one against 2^48 (one chain), and just above it when the lanes sum them first;
// the scales then differ by one ulp.
// A second row tells the documented tree from its neighbours (below); a short row is all tail.
TEST(Ops, RmsNormSumsInTheDocumentedOrder) {
    ThreadPool pool(2);
    auto lanes = [](const std::vector<float>& x) {
        const int64_t n = static_cast<int64_t>(x.size()), n8 = n / 8 * 8;
        double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t i = 0; i < n8; ++i) l[i % 8] += double(x[i]) * double(x[i]);
        double ss = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        for (int64_t i = n8; i < n; ++i) ss += double(x[i]) * double(x[i]);
        return ss;
    };
    auto chain = [](const std::vector<float>& x) {
        double ss = 0;
        for (float v : x) ss += double(v) * double(v);
        return ss;
    };
    std::vector<float> tie(1024, 0.17f);
    tie[0] = 16777216.f;
    tie[1] = 446464.f;
    // The tree: lane sums L0 = 2^60 + 2^36, L1 = L3 = 100, L2 = 0 give a mean (sum / 8) just above a
    // float midpoint when L1 + L3 is added as one (the documented (L0 + L2) + (L1 + L3)) and exactly
    // on it (ties to even, one ulp lower) when each 100 is lost against L0 alone, as in
    // (L0 + L1) + (L2 + L3) or one chain.
    std::vector<float> tree{1073741824.f, 10.f, 0.f, 10.f, 262144.f, 0.f, 0.f, 0.f};
    auto adjacent = [](const std::vector<float>& x) {
        double L[4];
        for (int j = 0; j < 4; ++j) L[j] = double(x[j]) * double(x[j]) + double(x[j + 4]) * double(x[j + 4]);
        return (L[0] + L[1]) + (L[2] + L[3]);
    };
    auto random = random_vec(1029, 7, 1.f);
    auto short_row = random_vec(7, 9, 1.f);  // the tail only
    for (const auto* x : {&tie, &tree, &random, &short_row}) {
        const int64_t n = static_cast<int64_t>(x->size());
        const auto w = random_vec(n, 8);
        std::vector<float> y(n);
        kernels::rms_norm(x->data(), n, w.data(), y.data(), n, 1, n, 1e-5f, pool);
        auto scale_of = [&](double ss) { return 1.0f / std::sqrt(static_cast<float>(ss / double(n)) + 1e-5f); };
        const float scale = scale_of(lanes(*x));
        if (x == &tie || x == &tree) {
            ASSERT_NE(scale, scale_of(chain(*x))) << "the row no longer tells the two orders apart";
        }
        if (x == &tree) {
            ASSERT_NE(scale, scale_of(adjacent(*x))) << "the row no longer tells the two trees apart";
        }
        for (int64_t i = 0; i < n; ++i)
            ASSERT_EQ(y[i], ((*x)[i] * scale) * w[i]) << "n " << n << " i " << i;
    }
}

TEST(Ops, RopeNormRotatesAdjacentPairsOfTheFirstDims) {
    const int heads = 3, hd = 16, n_rot = 8, n_pos = 50;
    std::vector<float> table(n_pos * n_rot);
    kernels::rope_table(table.data(), n_pos, n_rot, 10000.f);
    auto x = random_vec(2 * heads * hd, 3);
    const auto x0 = x;
    const int32_t pos[2] = {0, 37};
    kernels::rope_norm(x.data(), heads * hd, 2, heads, hd, n_rot, pos, table.data());
    for (int t = 0; t < 2; ++t)
        for (int h = 0; h < heads; ++h)
            for (int d = 0; d < hd; d += 2) {
                const float* a = &x0[t * heads * hd + h * hd + d];
                const float* b = &x[t * heads * hd + h * hd + d];
                if (d >= n_rot) {
                    EXPECT_EQ(b[0], a[0]);
                    EXPECT_EQ(b[1], a[1]);
                    continue;
                }
                const double th = pos[t] * std::pow(10000.0, -double(d) / n_rot);
                EXPECT_NEAR(b[0], a[0] * std::cos(th) - a[1] * std::sin(th), 1e-5);
                EXPECT_NEAR(b[1], a[0] * std::sin(th) + a[1] * std::cos(th), 1e-5);
            }
}

TEST(Ops, SwigluIsGateThenUp) {
    ThreadPool pool(2);
    const int64_t n_ff = 37, n_tok = 3;
    auto gu = random_vec(n_tok * 2 * n_ff, 4, 4.f);
    std::vector<float> out(n_tok * n_ff);
    kernels::swiglu(gu.data(), out.data(), n_tok, n_ff, pool);
    for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t i = 0; i < n_ff; ++i) {
            const double g = gu[t * 2 * n_ff + i], u = gu[t * 2 * n_ff + n_ff + i];
            EXPECT_NEAR(out[t * n_ff + i], g / (1 + std::exp(-g)) * u, 1e-5 * (std::fabs(g * u) + 1e-3));
        }
}

// Runs fn() with the scalar and then the AVX2 kernels (when the CPU has them), restoring "auto".
void for_each_isa(const std::function<void(const char*)>& fn) {
    for (const char* isa : {"scalar", "avx2"}) {
        if (!kernels::force_cpu_isa(isa)) continue;
        fn(isa);
    }
    kernels::force_cpu_isa("auto");
}

// SwiGLU's vectorized exp: silu(g) = g / (1 + exp(-g)) with u = 1 over g in [-87, 88] (for
// g < 0 the result is ~ g * exp(g), so exp's relative error shows directly) within 4 FP32 ulps
// (exp <= 2 ulp, then 1 +, /, * each round once); finite (and the right limit) at |g| = 1e4;
// the scalar and AVX2 paths and every position in a row (vector body or tail) give the same bits.
TEST(Ops, SwigluExpIsAccurateAndFinite) {
    ThreadPool pool(2);
    const int64_t n = 200003;  // odd: a tail after the 8-wide body
    std::vector<float> gu(2 * n), ref_out, out(n);
    for (int64_t i = 0; i < n; ++i) {
        gu[i] = -87.f + 175.f * float(i) / float(n - 1);
        gu[n + i] = 1.f;
    }
    gu[0] = -1e4f, gu[1] = 1e4f, gu[2] = -200.f, gu[3] = 0.f, gu[4] = -0.f, gu[5] = 88.7f, gu[6] = -88.7f;
    for_each_isa([&](const char* isa) {
        kernels::swiglu(gu.data(), out.data(), 1, n, pool);
        double max_ulp = 0;
        for (int64_t i = 0; i < n; ++i) {
            const double g = gu[i], ref = g / (1 + std::exp(-g));
            ASSERT_TRUE(std::isfinite(out[i])) << isa << " g=" << g;
            if (std::fabs(ref) < 1e-37) {  // subnormal range of the result
                EXPECT_NEAR(out[i], ref, 1e-44) << isa << " g=" << g;
                continue;
            }
            const double ulp = std::ldexp(1.0, std::ilogb(ref) - 23);
            max_ulp = std::max(max_ulp, std::fabs(out[i] - ref) / ulp);
        }
        EXPECT_LE(max_ulp, 4.0) << isa;
        EXPECT_EQ(out[1], 1e4f) << isa;
        EXPECT_EQ(out[0], 0.f) << isa;
        if (ref_out.empty()) ref_out = out;
        else EXPECT_EQ(0, std::memcmp(ref_out.data(), out.data(), n * sizeof(float))) << isa << " differs from scalar";
    });
    // The same values at other offsets (tail vs vector body) give the same bits.
    std::vector<float> gu2(2 * 13), out2(13);
    for (int i = 0; i < 13; ++i) gu2[i] = gu[100 + i], gu2[13 + i] = 1.f;
    kernels::swiglu(gu2.data(), out2.data(), 1, 13, pool);
    for (int i = 0; i < 13; ++i) EXPECT_EQ(out2[i], ref_out[100 + i]) << i;
}

struct AttnCase {
    int n_head, n_head_kv, hd;
    GgmlType type;
    float qk_scale;     // q and k ~ N(0, qk_scale^2): scores ~ qk_scale^2 (softmax nearly one-hot when large)
    float offset = 0;   // > 0: q = offset*u + N(0,1), k = offset*u + N(0,1)*k_noise, |u| = 1 per head:
    float k_noise = 0;  //      scores ~ offset^2/sqrt(hd) with differences of a few units
};

// q [n_tok][n_head*hd] and K [n_ctx][n_head_kv*hd] for a case.
void make_qk(const AttnCase& c, int64_t n_tok, int64_t n_ctx, uint32_t seed, std::vector<float>& q,
             std::vector<float>& k) {
    if (c.offset <= 0) {
        q = random_vec(n_tok * c.n_head * c.hd, seed, c.qk_scale);
        k = random_vec(n_ctx * c.n_head_kv * c.hd, seed + 1, c.qk_scale);
        return;
    }
    q = random_vec(n_tok * c.n_head * c.hd, seed);
    k = random_vec(n_ctx * c.n_head_kv * c.hd, seed + 1, c.k_noise);
    const float u = c.offset / std::sqrt(float(c.hd));
    for (auto& x : q) x += u;
    for (auto& x : k) x += u;
}

// kernels::attention over tokens t with n_kv[t] rows of one K and one V cache (every token
// reads the same rows k, v of types kt, vt). Returns out [n_tok][n_head * hd].
std::vector<float> attend(const std::vector<float>& q, int n_head, int n_head_kv, int hd, GgmlType kt, const void* k,
                          GgmlType vt, const void* v, const std::vector<int32_t>& n_kv, ThreadPool& pool) {
    std::vector<float> out(n_kv.size() * n_head * hd, -1.f);
    const testing::SharedRowsAttention s(q.data(), out.data(), n_head, n_head_kv, hd, kt, k, vt, v, n_kv);
    kernels::attention(s.args, pool);
    return out;
}

// Runs kernels::attention on tokens with n_kv[t] = n_kv[t] rows of one cache (rows from `kf`
// and `vf`, stored as c.type). Returns out [n_tok][n_head * hd].
std::vector<float> run_attention(const AttnCase& c, const std::vector<float>& q, const std::vector<float>& kf,
                                 const std::vector<float>& vf, const std::vector<int32_t>& n_kv, ThreadPool& pool,
                                 std::vector<float>* kd = nullptr, std::vector<float>* vd = nullptr) {
    const int64_t kvw = int64_t(c.n_head_kv) * c.hd;
    const int64_t n_rows = int64_t(kf.size()) / kvw;
    const size_t rb = ggml_row_bytes(c.type, kvw);
    std::vector<uint8_t> k(n_rows * rb), v(n_rows * rb);
    for (int64_t j = 0; j < n_rows; ++j) {
        kernels::store_row(c.type, kf.data() + j * kvw, k.data() + j * rb, kvw);
        kernels::store_row(c.type, vf.data() + j * kvw, v.data() + j * rb, kvw);
    }
    if (kd) {  // the values the kernel sees (exact dequantization of the stored rows)
        kd->resize(n_rows * kvw);
        vd->resize(n_rows * kvw);
        for (int64_t j = 0; j < n_rows; ++j) {
            kernels::dequantize_row(c.type, k.data() + j * rb, kd->data() + j * kvw, kvw);
            kernels::dequantize_row(c.type, v.data() + j * rb, vd->data() + j * kvw, kvw);
        }
    }
    return attend(q, c.n_head, c.n_head_kv, c.hd, c.type, k.data(), c.type, v.data(), n_kv, pool);
}

// Causal GQA attention: query head h uses KV head h / (n_head / n_head_kv); token t sees rows
// 0..n_kv[t). KV caches f32, f16, q8_0 (the reference uses the dequantized rows the kernel sees);
// groups of 1, 2, 3, 8 and 72 query heads per KV head; head_dim 32, 40 (a column tail), 128; odd
// n_kv; scores up to ~1e5.
// Tolerance vs FP64: an FP32 score s carries an error up to
//   d = (hd/8 + 4) * 2^-24 * scale * max_j sum_c |q_c k_jc|   (FMA chains of hd/8 terms, a
//       3-level reduction, the scale) + 2^-24 |s|,
// which moves each probability by a factor within exp(±2d); so
//   |out - ref| <= 1e-5 (1 + |ref|) + expm1(2d) * max_j |V_jc|.
// At scores ~1e5 (one FP32 ulp = 0.008) this allows a few 1e-2; at O(1) scores, 1e-5.
TEST(Ops, AttentionMatchesFp64WithGqaCacheTypesAndLargeScores) {
    ThreadPool pool(2);
    const std::vector<AttnCase> cases = {
        {2, 2, 32, GgmlType::kF32, 1.f},    {4, 2, 32, GgmlType::kF16, 1.f},     {6, 2, 32, GgmlType::kQ8_0, 1.f},
        {8, 1, 128, GgmlType::kF32, 1.f},   {8, 1, 128, GgmlType::kF16, 2.f},    {16, 2, 128, GgmlType::kQ8_0, 1.f},
        {8, 1, 40, GgmlType::kF32, 1.f},    {3, 1, 40, GgmlType::kF16, 1.f},     {8, 1, 128, GgmlType::kF32, 316.f},
        {4, 2, 32, GgmlType::kF32, 300.f},  {8, 1, 32, GgmlType::kQ8_0, 100.f},  {16, 2, 64, GgmlType::kF16, 316.f},
        // Scores ~1e5 that differ by a few units: the softmax is spread, FP32 score rounding shows.
        {8, 1, 128, GgmlType::kF32, 1.f, 1063.f, 0.03f}, {8, 1, 128, GgmlType::kF16, 1.f, 1063.f, 0.03f},
        {16, 2, 64, GgmlType::kF32, 1.f, 841.f, 0.04f},
        {72, 1, 32, GgmlType::kF32, 1.f},  // a group of more heads than one work item takes (64)
    };
    const std::vector<int32_t> n_kv = {1, 7, 45, 33, 2, 64, 9};
    const int n_ctx = 64;
    uint32_t seed = 10;
    for (const auto& c : cases) {
        SCOPED_TRACE(::testing::Message() << "heads " << c.n_head << "/" << c.n_head_kv << " hd " << c.hd << " type "
                                        << int(c.type) << " qk " << c.qk_scale);
        const int64_t kvw = int64_t(c.n_head_kv) * c.hd, qw = int64_t(c.n_head) * c.hd;
        const int64_t n_tok = int64_t(n_kv.size());
        std::vector<float> q, kf, k, v;
        make_qk(c, n_tok, n_ctx, seed, q, kf);
        seed += 2;
        const auto vf = random_vec(n_ctx * kvw, seed++);
        const auto out = run_attention(c, q, kf, vf, n_kv, pool, &k, &v);
        const double scale = 1.0 / std::sqrt(double(float(c.hd))), eps = std::ldexp(1.0, -24);
        const int group = c.n_head / c.n_head_kv;
        double worst = 0;
        for (int64_t t = 0; t < n_tok; ++t)
            for (int h = 0; h < c.n_head; ++h) {
                const int g = h / group;
                const float* qh = &q[t * qw + h * c.hd];
                std::vector<double> s(n_kv[t]);
                double mx = -1e300, sum = 0, d = 0, vmax = 0;
                for (int j = 0; j < n_kv[t]; ++j) {
                    double dot = 0, mag = 0;
                    for (int i = 0; i < c.hd; ++i) {
                        dot += double(qh[i]) * k[j * kvw + g * c.hd + i];
                        mag += std::fabs(double(qh[i]) * k[j * kvw + g * c.hd + i]);
                    }
                    s[j] = dot * scale;
                    mx = std::max(mx, s[j]);
                    d = std::max(d, (c.hd / 8 + 4) * eps * scale * mag + eps * std::fabs(s[j]));
                }
                for (auto& x : s) sum += (x = std::exp(x - mx));
                for (int i = 0; i < c.hd; ++i) {
                    double o = 0;
                    vmax = 0;
                    for (int j = 0; j < n_kv[t]; ++j) {
                        o += s[j] / sum * v[j * kvw + g * c.hd + i];
                        vmax = std::max(vmax, std::fabs(double(v[j * kvw + g * c.hd + i])));
                    }
                    const double tol = 1e-5 * (1 + std::fabs(o)) + std::expm1(2 * d) * vmax;
                    const double err = std::fabs(out[t * qw + h * c.hd + i] - o);
                    worst = std::max(worst, err / tol);
                    ASSERT_LE(err, tol) << "t " << t << " h " << h << " c " << i;
                }
            }
        EXPECT_LE(worst, 1.0);
    }
}

// K and V caches of different types (-ctk q8_0 -ctv f16, ...): each is read as its own type, so
// the result is bit for bit that of f32 caches holding the dequantized rows (a converted row has
// exactly the stored values), on every ISA.
TEST(Ops, AttentionTakesKAndVCachesOfDifferentTypes) {
    ThreadPool pool(2);
    const int n_head = 4, n_head_kv = 2, hd = 64, n_ctx = 80;
    const int64_t kvw = int64_t(n_head_kv) * hd, qw = int64_t(n_head) * hd;
    const std::vector<int32_t> n_kv = {1, 5, 33, 80, 17};
    const int64_t n_tok = int64_t(n_kv.size());
    const auto q = random_vec(n_tok * qw, 7, 2.f);
    const auto kf = random_vec(n_ctx * kvw, 8, 2.f), vf = random_vec(n_ctx * kvw, 9);
    // Rows of `t` from f; `deq` gets their exact f32 values.
    auto store = [&](GgmlType t, const std::vector<float>& f, std::vector<float>& deq) {
        const size_t rb = ggml_row_bytes(t, kvw);
        std::vector<uint8_t> rows(n_ctx * rb);
        deq.resize(f.size());
        for (int64_t j = 0; j < n_ctx; ++j) {
            kernels::store_row(t, f.data() + j * kvw, rows.data() + j * rb, kvw);
            kernels::dequantize_row(t, rows.data() + j * rb, deq.data() + j * kvw, kvw);
        }
        return rows;
    };
    const GgmlType types[] = {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0};
    for (GgmlType kt : types)
        for (GgmlType vt : types) {
            if (kt == vt) continue;
            SCOPED_TRACE(::testing::Message() << "k " << ggml_type_name(kt) << " v " << ggml_type_name(vt));
            std::vector<float> kd, vd;
            const auto k = store(kt, kf, kd);
            const auto v = store(vt, vf, vd);
            for_each_isa([&](const char* isa) {
                const auto mixed = attend(q, n_head, n_head_kv, hd, kt, k.data(), vt, v.data(), n_kv, pool);
                const auto ref = attend(q, n_head, n_head_kv, hd, GgmlType::kF32, kd.data(), GgmlType::kF32, vd.data(), n_kv, pool);
                EXPECT_EQ(0, std::memcmp(mixed.data(), ref.data(), mixed.size() * 4)) << isa;
            });
        }
}

// Bit-identical outputs whatever the threads (1, 2, 3), the batch (each token alone vs all
// together, in another order) and the ISA (scalar vs AVX2).
TEST(Ops, AttentionIsBitIdenticalAcrossThreadsBatchesAndIsa) {
    const std::vector<AttnCase> cases = {{8, 1, 128, GgmlType::kF32, 3.f}, {6, 2, 40, GgmlType::kF16, 3.f},
                                         {16, 2, 64, GgmlType::kQ8_0, 3.f}, {3, 3, 32, GgmlType::kF32, 3.f},
                                         {8, 1, 128, GgmlType::kF32, 1.f, 1063.f, 0.03f}};
    const std::vector<int32_t> n_kv = {1, 2, 3, 9, 17, 31, 64, 100, 129, 200};
    const int n_ctx = 200;
    for (const auto& c : cases) {
        SCOPED_TRACE(::testing::Message() << "heads " << c.n_head << "/" << c.n_head_kv << " hd " << c.hd);
        const int64_t kvw = int64_t(c.n_head_kv) * c.hd, qw = int64_t(c.n_head) * c.hd;
        const int64_t n_tok = int64_t(n_kv.size());
        std::vector<float> q, kf;
        make_qk(c, n_tok, n_ctx, 40, q, kf);
        const auto vf = random_vec(n_ctx * kvw, 42);
        std::vector<float> ref;
        for_each_isa([&](const char* isa) {
            for (int threads : {1, 2, 3}) {
                ThreadPool pool(threads);
                const auto out = run_attention(c, q, kf, vf, n_kv, pool);
                if (ref.empty()) ref = out;
                ASSERT_EQ(0, std::memcmp(ref.data(), out.data(), ref.size() * sizeof(float)))
                    << isa << ", " << threads << " threads";
            }
            ThreadPool pool(2);
            for (int64_t t = n_tok - 1; t >= 0; --t) {  // one token per call
                std::vector<float> qt(q.begin() + t * qw, q.begin() + (t + 1) * qw);
                const auto out = run_attention(c, qt, kf, vf, {n_kv[t]}, pool);
                ASSERT_EQ(0, std::memcmp(&ref[t * qw], out.data(), qw * sizeof(float))) << isa << ", token " << t;
            }
        });
    }
}

TEST(Sampler, SameSeedSameTokensAndGreedyIsArgmax) {
    auto logits = random_vec(500, 8, 2.f);
    sampling::SamplerParams p;
    p.temperature = 0.9f;
    p.top_k = 50;
    p.top_p = 0.9f;
    p.min_p = 0.01f;
    p.repeat_penalty = 1.1f;
    p.seed = 1234;
    auto draw = [&](const sampling::SamplerParams& pp) {
        sampling::Sampler s(pp);
        std::vector<int32_t> out;
        for (int i = 0; i < 200; ++i) {
            const int32_t t = s.sample(logits.data(), 500);
            s.accept(t);
            out.push_back(t);
        }
        return out;
    };
    const auto a = draw(p), b = draw(p);
    EXPECT_EQ(a, b);
    auto p2 = p;
    p2.seed = 99;
    EXPECT_NE(draw(p2), a);
    // Every draw respects top-k: it is among the 50 largest logits.
    std::vector<float> sorted = logits;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    for (int32_t t : a) EXPECT_GE(logits[t] * 1.1f + 1e-3f, sorted[49] / 1.1f - 1e-3f);
    sampling::SamplerParams g;
    g.temperature = 0.f;
    sampling::Sampler greedy(g);
    EXPECT_EQ(greedy.sample(logits.data(), 500), sampling::argmax(logits.data(), 500));
}

TEST(Sampler, MinPAndTopPNarrowTheChoice) {
    std::vector<float> logits(10, -10.f);
    logits[3] = 5.f;
    logits[7] = 4.9f;
    sampling::SamplerParams p;
    p.temperature = 1.f;
    p.top_k = 0;
    p.top_p = 1.f;
    p.min_p = 0.5f;  // keeps only tokens with p >= 0.5 * p_max: 3 and 7
    sampling::Sampler s(p);
    for (int i = 0; i < 100; ++i) {
        const int32_t t = s.sample(logits.data(), 10);
        EXPECT_TRUE(t == 3 || t == 7);
    }
}

}  // namespace
}  // namespace pipelm
