// The query side of an attention call, the same on every device: kernels::AttentionArgs (CPU,
// ops.h) and kernels::cuda::AttentionArgs (ops_cuda.h) add where each keeps K and V.
#pragma once
#include <cstdint>

namespace pipelm::kernels {

struct AttentionHeads {
    const float* q = nullptr;  // [n_tokens][n_head * head_dim], row stride ldq (post-RoPE)
    int64_t ldq = 0;
    float* out = nullptr;      // [n_tokens][n_head * head_dim], row stride ldo
    int64_t ldo = 0;
    int64_t n_tokens = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    float scale = 1.f;  // 1 / sqrt(head_dim) for GLM-4
};

}  // namespace pipelm::kernels
