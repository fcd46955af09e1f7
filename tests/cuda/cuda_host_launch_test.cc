// Launch geometry, shared memory and workspaces of the CUDA kernels (kernels/cuda/launch.h)
// against the limits of sm_80 (A100) and sm_90 (H100 / H200), for every launch a GLM-4 layer and
// the head issue, at GLM-4-9B and -32B shapes and beyond (contexts past the shared-memory limit,
// huge batches), without a GPU. The launchers in kernels/cuda/*.cu take their configurations from
// the same functions.
#include <gtest/gtest.h>

#include <climits>
#include <string>
#include <vector>

#include "kernels/cuda/launch.h"
#include "runtime/base/error.h"

namespace pipelm::cudatest {
namespace {

namespace kc = kernels::cuda;

struct Shape {
    const char* name;
    int64_t n_embd;
    int n_head, n_head_kv, head_dim;
    int64_t n_ff, n_vocab;
    int n_ctx;
    int64_t n_ubatch;
};

const std::vector<Shape>& shapes() {
    static const std::vector<Shape> v = {
        {"glm4-9b", 4096, 32, 2, 128, 13696, 151552, 32768, 512},
        {"glm4-32b", 6144, 48, 2, 128, 23040, 151552, 32768, 512},
        {"glm4-32b ctx 128k ubatch 4096", 6144, 48, 2, 128, 23040, 151552, 131072, 4096},
        {"beyond: 16k hidden, 128 heads, 256k vocab", 16384, 128, 8, 128, 53248, 262144, 65536, 8192},
    };
    return v;
}

// The static shared memory of the attention kernel is read at run time; plan for a range.
const size_t kStaticSmem[] = {0, 384, 1024, 4096};

// Every launch of one layer + embedding + head for a batch of n tokens with max_kv keys.
std::vector<kc::LaunchConfig> layer_launches(const Shape& s, int64_t n, int max_kv, size_t static_smem,
                                             const kc::DeviceLimits& d) {
    std::vector<kc::LaunchConfig> v;
    const int64_t Q = static_cast<int64_t>(s.n_head) * s.head_dim, KV = static_cast<int64_t>(s.n_head_kv) * s.head_dim;
    v.push_back(kc::row_launch("embedding", n, 128));
    v.push_back(kc::row_launch("rms_norm", n, 256));
    struct Mat { int64_t rows, cols; };
    for (const Mat m : {Mat{Q + 2 * KV, s.n_embd}, Mat{s.n_embd, Q}, Mat{2 * s.n_ff, s.n_embd}, Mat{s.n_embd, s.n_ff},
                        Mat{s.n_vocab, s.n_embd}}) {
        if (n <= kc::kGemvMaxTokens) v.push_back(kc::gemv_launch(m.rows));
        else v.push_back(kc::row_launch("dequantize", kc::dequant_chunk_rows(m.rows, m.cols), 256));
        v.push_back(kc::row_launch("split_16", n, 256));
    }
    v.push_back(kc::row_launch("add_bias_rows", n, 256));
    v.push_back(kc::row_launch("rope_norm", n, 128));
    v.push_back(kc::row_launch("kv_store", n, 128));
    kc::AttentionShape a{n, s.n_head, s.head_dim, max_kv};
    const bool shared = kc::attention_scores_fit_shared(s.head_dim, max_kv, static_smem, d);
    v.push_back(kc::plan_attention(a, static_smem, d, !shared, 0).launch);
    if (!shared) v.push_back(kc::plan_attention(a, static_smem, d, true, size_t(256) << 20).launch);
    v.push_back(kc::grid_stride_launch("swiglu", n * s.n_ff, 256));
    v.push_back(kc::grid_stride_launch("add", n * s.n_embd, 256));
    v.push_back(kc::grid_stride_launch("check_finite", n * s.n_embd, 256, 1024));
    v.push_back(kc::row_launch("argmax", n, 256));
    return v;
}

TEST(CudaHostLaunch, EveryLaunchOfGlm4ShapesFitsSm80AndSm90) {
    int checked = 0;
    for (const kc::DeviceLimits& d : {kc::sm80_limits(), kc::sm90_limits()})
        for (const Shape& s : shapes())
            for (int64_t n : {int64_t{1}, kc::kGemvMaxTokens, kc::kGemvMaxTokens + 1, s.n_ubatch})
                for (int max_kv : {1, 4096, s.n_ctx})
                    for (size_t st : kStaticSmem)
                        for (const kc::LaunchConfig& c : layer_launches(s, n, max_kv, st, d)) {
                            EXPECT_EQ(kc::launch_problem(c, d), "") << s.name << " n " << n << " max_kv " << max_kv;
                            ++checked;
                        }
    std::printf("%d launches checked\n", checked);
}

// The largest context whose scores stay in shared memory, with the attention kernel's static
// shared memory (384 bytes when this was written: block_max + block_sum<double> scratch):
// (opt-in limit - static) / 4 - head_dim floats.
TEST(CudaHostLaunch, AttentionScoresSwitchToGlobalScratchAtTheSharedMemoryLimit) {
    struct Case { kc::DeviceLimits d; int max_fit; };
    for (const Case& c : {Case{kc::sm80_limits(), (163 * 1024 - 384) / 4 - 128},
                          Case{kc::sm90_limits(), (227 * 1024 - 384) / 4 - 128}}) {
        EXPECT_TRUE(kc::attention_scores_fit_shared(128, c.max_fit, 384, c.d)) << c.d.name;
        EXPECT_FALSE(kc::attention_scores_fit_shared(128, c.max_fit + 1, 384, c.d)) << c.d.name;
        // GLM-4's 32k context: 128.5 KiB of dynamic shared memory, opt-in on both.
        EXPECT_TRUE(kc::attention_scores_fit_shared(128, 32768, 384, c.d)) << c.d.name;
        const kc::AttentionPlan p = kc::plan_attention({512, 48, 128, 32768}, 384, c.d, false, 0);
        EXPECT_TRUE(p.launch.needs_optin(c.d));
        EXPECT_EQ(p.launch.dynamic_smem, (128 + 32768) * 4u);
        EXPECT_EQ(p.launch.grid.x, 512 * 48);
        // 64k: not in shared memory; the plan without a scratch refuses, naming the fix.
        EXPECT_FALSE(kc::attention_scores_fit_shared(128, 65536, 384, c.d)) << c.d.name;
        try {
            kc::plan_attention({512, 48, 128, 65536}, 384, c.d, false, 0);
            ADD_FAILURE() << "64k scores planned in shared memory on " << c.d.name;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("global scores scratch"), std::string::npos) << e.what();
        }
        // With a global scratch: no dynamic scores, and a bounded scratch splits the batch.
        const kc::AttentionPlan g = kc::plan_attention({512, 48, 128, 65536}, 384, c.d, true, 0);
        EXPECT_FALSE(g.scores_in_shared);
        EXPECT_EQ(g.tokens_per_launch, 512);
        EXPECT_EQ(g.launch.dynamic_smem, 128 * 4u);
        const size_t per_token = kc::attention_scores_bytes(1, 48, 65536);  // 12 MiB
        const kc::AttentionPlan b = kc::plan_attention({512, 48, 128, 65536}, 384, c.d, true, size_t(256) << 20);
        EXPECT_EQ(b.tokens_per_launch, static_cast<int64_t>((size_t(256) << 20) / per_token));
        EXPECT_LE(kc::attention_scores_bytes(b.tokens_per_launch, 48, 65536), size_t(256) << 20);
        EXPECT_THROW(kc::plan_attention({512, 48, 128, 65536}, 384, c.d, true, per_token - 1), Error);
    }
}

// One block per (token, head) in grid x: far beyond any batch, and capped per launch.
TEST(CudaHostLaunch, AttentionGridIsTokensTimesHeadsInX) {
    const kc::DeviceLimits d = kc::sm90_limits();
    const kc::AttentionPlan p = kc::plan_attention({65536, 128, 128, 1024}, 384, d, false, 0);
    EXPECT_EQ(p.launch.grid.x, int64_t{65536} * 128);  // 8.4 M blocks: above y/z's 65535, fine in x
    EXPECT_EQ(p.launch.grid.y, 1);
    const kc::AttentionPlan q = kc::plan_attention({int64_t{1} << 25, 128, 128, 16}, 384, d, false, 0);
    EXPECT_EQ(q.tokens_per_launch, d.max_grid_x / 128);
    EXPECT_EQ(kc::launch_problem(q.launch, d), "");
}

TEST(CudaHostLaunch, LaunchProblemNamesEachLimit) {
    const kc::DeviceLimits d = kc::sm80_limits();
    kc::LaunchConfig c = kc::row_launch("k", 10, 256);
    EXPECT_EQ(kc::launch_problem(c, d), "");
    c.grid.y = 65536;
    EXPECT_NE(kc::launch_problem(c, d).find("grid"), std::string::npos);
    c = kc::row_launch("k", int64_t{1} << 31, 256);
    EXPECT_NE(kc::launch_problem(c, d).find("grid"), std::string::npos);
    c = kc::row_launch("k", 10, 1025);
    EXPECT_NE(kc::launch_problem(c, d).find("threads"), std::string::npos);
    c = kc::row_launch("k", 10, 256);
    c.dynamic_smem = 163 * 1024;
    c.static_smem = 1;
    EXPECT_NE(kc::launch_problem(c, d).find("shared memory"), std::string::npos);
    EXPECT_EQ(kc::launch_problem(c, kc::sm90_limits()), "");
    c.dynamic_smem = 0;
    c.static_smem = 48 * 1024 + 1;  // static shared memory cannot opt in
    EXPECT_NE(kc::launch_problem(c, d).find("static"), std::string::npos);
    EXPECT_THROW(kc::check_launch(c, d), Error);
    c = kc::row_launch("k", 0, 256);
    EXPECT_NE(kc::launch_problem(c, d).find("empty"), std::string::npos);
}

// Every weight of the shapes above, every type, FP32 policy: the path never rounds activations,
// the workspace is one bounded F32 row chunk (or nothing), and cuBLAS's int sizes hold.
TEST(CudaHostLaunch, MatmulPathsAndWorkspacesForEveryWeight) {
    const GgmlType types[] = {GgmlType::kF32,  GgmlType::kF16,    GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                              GgmlType::kQ4_1, GgmlType::kQ5_0,   GgmlType::kQ5_1, GgmlType::kIQ4_NL,
                              GgmlType::kQ4_K, GgmlType::kQ5_K,   GgmlType::kQ6_K, GgmlType::kIQ4_XS};
    for (const Shape& s : shapes()) {
        const int64_t Q = static_cast<int64_t>(s.n_head) * s.head_dim;
        const int64_t mats[][2] = {{Q + 2 * s.n_head_kv * s.head_dim, s.n_embd}, {s.n_embd, Q},
                                   {2 * s.n_ff, s.n_embd}, {s.n_embd, s.n_ff}, {s.n_vocab, s.n_embd}};
        for (GgmlType t : types)
            for (const auto& m : mats)
                for (int64_t n : {int64_t{1}, kc::kGemvMaxTokens, kc::kGemvMaxTokens + 1, s.n_ubatch}) {
                    const kc::MatmulPath p = kc::matmul_path(t, n, kc::Accum::kF32);
                    const size_t ws = kc::matmul_workspace_bytes(t, m[0], m[1], n, kc::Accum::kF32);
                    const std::string what = std::string(s.name) + " " + ggml_type_name(t) + " " +
                                             std::to_string(m[0]) + "x" + std::to_string(m[1]) + " n " +
                                             std::to_string(n);
                    EXPECT_NE(p, kc::MatmulPath::kGemm16) << what;  // activations are never rounded
                    if (n <= kc::kGemvMaxTokens) {
                        EXPECT_EQ(p, kc::MatmulPath::kGemv) << what;
                        EXPECT_EQ(ws, 0u) << what;
                    } else if (t == GgmlType::kF32) {
                        EXPECT_EQ(p, kc::MatmulPath::kSgemm) << what;
                        EXPECT_EQ(ws, 0u) << what;
                    } else {
                        EXPECT_EQ(p, kc::MatmulPath::kDequantSgemm) << what;
                        const int64_t chunk = kc::dequant_chunk_rows(m[0], m[1]);
                        EXPECT_GE(chunk, 1) << what;
                        EXPECT_LE(chunk, m[0]) << what;
                        EXPECT_LE(static_cast<size_t>(chunk) * m[1] * 4, kc::kDequantChunkBytes) << what;
                        EXPECT_GE(ws, static_cast<size_t>(chunk) * m[1] * 4) << what;
                        EXPECT_LE(ws, kc::kDequantChunkBytes + 256) << what;
                    }
                    EXPECT_LE(m[0], INT_MAX);  // cuBLAS m, n, k, lda
                    EXPECT_LE(m[1], INT_MAX);
                    EXPECT_LE(n, INT_MAX);
                }
    }
    // The reduced-precision demonstrations keep their 16-bit GEMMs and size them.
    EXPECT_EQ(kc::matmul_path(GgmlType::kF16, 64, kc::Accum::kF16), kc::MatmulPath::kGemm16);
    EXPECT_EQ(kc::matmul_path(GgmlType::kBF16, 64, kc::Accum::kBF16), kc::MatmulPath::kGemm16);
    const kc::Gemm16Layout L = kc::gemm16_layout(GgmlType::kF16, 6144, 23040, 512, kc::Accum::kF16);
    EXPECT_TRUE(L.half_acc);
    EXPECT_GE(L.total, size_t(512) * 23040 * 2 + size_t(512) * 6144 * 2);
    EXPECT_EQ(kc::matmul_workspace_bytes(GgmlType::kF16, 6144, 23040, 512, kc::Accum::kF16), L.total);
}

}  // namespace
}  // namespace pipelm::cudatest
