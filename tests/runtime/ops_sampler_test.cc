// CPU ops of a GLM-4 layer against plain FP64 references on odd sizes, and sampler determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "runtime/base/thread_pool.h"
#include "runtime/sampling/sampler.h"

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

// Causal GQA attention: query head h uses KV head h / (n_head / n_head_kv); token t sees rows 0..n_kv[t).
TEST(Ops, AttentionMatchesFp64WithGqaAndLargeScores) {
    ThreadPool pool(2);
    const int n_head = 6, n_kv_head = 2, hd = 32, n_ctx = 45;
    const int64_t kvw = n_kv_head * hd;
    for (float scale : {1.f, 300.f}) {  // 300: scores of order 1e4 (GLM-4-like range)
        auto k = random_vec(n_ctx * kvw, 5, scale), v = random_vec(n_ctx * kvw, 6), q = random_vec(2 * n_head * hd, 7, scale);
        std::vector<float> out(2 * n_head * hd);
        const void* krows[2] = {k.data(), k.data()};
        const void* vrows[2] = {v.data(), v.data()};
        const int32_t n_kv[2] = {1, n_ctx};
        kernels::AttentionArgs a;
        a.q = q.data();
        a.ldq = n_head * hd;
        a.out = out.data();
        a.ldo = n_head * hd;
        a.n_tokens = 2;
        a.n_head = n_head;
        a.n_head_kv = n_kv_head;
        a.head_dim = hd;
        a.scale = 1.f / std::sqrt(float(hd));
        a.k_rows = krows;
        a.v_rows = vrows;
        a.n_kv = n_kv;
        kernels::attention(a, pool);
        for (int t = 0; t < 2; ++t)
            for (int h = 0; h < n_head; ++h) {
                const int g = h / (n_head / n_kv_head);
                std::vector<double> s(n_kv[t]);
                double mx = -1e300, sum = 0;
                for (int j = 0; j < n_kv[t]; ++j) {
                    double d = 0;
                    for (int c = 0; c < hd; ++c) d += double(q[t * n_head * hd + h * hd + c]) * k[j * kvw + g * hd + c];
                    s[j] = d * a.scale;
                    mx = std::max(mx, s[j]);
                }
                for (auto& x : s) sum += (x = std::exp(x - mx));
                for (int c = 0; c < hd; ++c) {
                    double o = 0;
                    for (int j = 0; j < n_kv[t]; ++j) o += s[j] / sum * v[j * kvw + g * hd + c];
                    // Large scores: one FP32 ulp of a 1e4 score shifts probabilities by ~1e-3.
                    EXPECT_NEAR(out[t * n_head * hd + h * hd + c], o, scale > 1 ? 5e-3 : 1e-5) << t << " " << h << " " << c;
                }
            }
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
