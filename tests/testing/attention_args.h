// kernels::AttentionArgs for the common test and benchmark case: every token reads the same K and
// V cache rows (one cache, token t sees its first n_kv[t] rows), queries and outputs packed
// [n_tokens][n_head * head_dim], scale 1/sqrt(head_dim). Used by tests/runtime/ops_sampler_test.cc
// and tests/kernels/bench_attention.cc.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "runtime/base/ggml_types.h"

namespace pipelm::testing {

// The arguments and the per-token row lists they point into: keep the object alive (and in
// place: not copyable) while `args` is used.
struct SharedRowsAttention {
    SharedRowsAttention(const float* q, float* out, int n_head, int n_head_kv, int head_dim, GgmlType k_type,
                        const void* k, GgmlType v_type, const void* v, const std::vector<int32_t>& n_kv)
        : k_rows(n_kv.size(), k), v_rows(n_kv.size(), v) {
        const int64_t qw = int64_t(n_head) * head_dim;
        args.q = q;
        args.ldq = qw;
        args.out = out;
        args.ldo = qw;
        args.n_tokens = int64_t(n_kv.size());
        args.n_head = n_head;
        args.n_head_kv = n_head_kv;
        args.head_dim = head_dim;
        args.scale = 1.f / std::sqrt(float(head_dim));
        args.k_rows = k_rows.data();
        args.v_rows = v_rows.data();
        args.n_kv = n_kv.data();
        args.k_type = k_type;
        args.v_type = v_type;
    }
    SharedRowsAttention(const SharedRowsAttention&) = delete;
    SharedRowsAttention& operator=(const SharedRowsAttention&) = delete;

    std::vector<const void*> k_rows, v_rows;
    kernels::AttentionArgs args;
};

}  // namespace pipelm::testing
