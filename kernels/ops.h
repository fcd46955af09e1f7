// Element-wise and attention ops of a GLM-4 layer on the CPU. FP32 activations, FP32 (or wider)
// accumulation. Every op computes each token's row independently of the other rows.
#pragma once
#include <cstdint>

#include "kernels/attention_heads.h"
#include "runtime/base/ggml_types.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::kernels {

// y[t][i] = (x[t][i] * s_t) * w[i], s_t = 1/sqrt(mean_i x[t][i]^2 + eps); sum of squares in double
// (as ggml) in eight lanes (i mod 8), then ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then
// the elements past the last multiple of 8. x and y: [n_rows][n] with row strides ldx / ldy; may alias.
void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t n_rows, int64_t n,
              float eps, ThreadPool& pool);

// Rotary embedding of type NORM (adjacent pairs (2i, 2i+1), i < n_rot/2) applied in place to
// x: [n_tokens][n_heads * head_dim] (row stride ld). cos_sin: per token, n_rot floats
// (cos θ_0, sin θ_0, cos θ_1, ...), table row stride n_rot; row of token t = cos_sin + pos[t] * n_rot.
void rope_norm(float* x, int64_t ld, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
               const float* cos_sin);

// Builds the cos/sin table for positions [0, n_pos): θ_i(p) = p · base^(−2i/n_rot), computed in double.
void rope_table(float* cos_sin, int64_t n_pos, int n_rot, float base);

// out[t][i] = silu(gu[t][i]) * gu[t][n_ff + i]  (gate first, then up), gu: [n_tokens][2 n_ff];
// silu(g) * u = g / (1 + exp(-g)) * u with a vectorized FP32 exp (<= ~2 ulp; exp(-g) = 0 or +inf
// for |g| large, so the result stays finite). Element-wise: the same bits whatever the split.
void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff, ThreadPool& pool);

// x[i] += y[i]
void add_inplace(float* x, const float* y, int64_t n);

// KV storage type of the cache: f32 or f16 (or q8_0 blocks of 32 along the row).
// Converts n floats into `type` at dst / back.
void store_row(GgmlType type, const float* src, void* dst, int64_t n);

struct AttentionArgs : AttentionHeads {
    // Per token: the K/V rows it attends to are rows [0, n_kv[t]) of its sequence's cache,
    // k_rows[t] / v_rows[t] point at row 0; each row holds n_head_kv * head_dim values of k_type
    // / v_type (they may differ: llama.cpp's -ctk q8_0 -ctv f16).
    const void* const* k_rows = nullptr;
    const void* const* v_rows = nullptr;
    const int32_t* n_kv = nullptr;
    GgmlType k_type = GgmlType::kF32;
    GgmlType v_type = GgmlType::kF32;
};

// Causal GQA attention, FP32 scores, FP32 softmax (max subtracted first; sum in double) and FP32
// softmax·V. Query head h uses KV head h / (n_head / n_head_kv). Per (token t, KV head g) all the
// group's query heads are done together (each K/V row loaded once for them); threads take
// contiguous ranges of (t, g) items of about equal cost (~ n_kv[t]), and a batch with few items
// (decode) splits a group's heads. The accumulation order (attention_cpu.cc) is fixed per
// (t, h): the result does not depend on the batch, the threads or the ISA (scalar vs AVX2).
// k_type, v_type: f32, f16 or q8_0 (head_dim a multiple of 32), each on its own; other block types
// are dequantized. A converted row holds exactly the values of the stored one, so the result is
// that of an f32 cache holding the dequantized rows, bit for bit.
void attention(const AttentionArgs& a, ThreadPool& pool);

// True if any of x[0..n) is NaN or ±Inf.
bool has_non_finite(const float* x, int64_t n);

}  // namespace pipelm::kernels
