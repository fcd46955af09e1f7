// KV cache of the layers one stage owns: per layer, per sequence slot, n_ctx rows of post-RoPE K
// (and V) of n_head_kv * head_dim values, stored as f32 (default), f16 or q8_0.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/base/ggml_types.h"

namespace pipelm::model {

class KvCache {
public:
    KvCache() = default;
    KvCache(int n_layers, int n_seq, int n_ctx, int64_t kv_width, GgmlType k_type, GgmlType v_type);

    static uint64_t bytes_needed(int n_layers, int n_seq, int n_ctx, int64_t kv_width, GgmlType k_type,
                                 GgmlType v_type);

    uint8_t* k_row(int layer, int seq, int pos) { return k_[layer].data() + offset(seq, pos, k_row_bytes_); }
    uint8_t* v_row(int layer, int seq, int pos) { return v_[layer].data() + offset(seq, pos, v_row_bytes_); }
    int n_ctx() const { return n_ctx_; }
    int n_seq() const { return n_seq_; }
    GgmlType k_type() const { return k_type_; }
    GgmlType v_type() const { return v_type_; }
    uint64_t bytes() const;

private:
    size_t offset(int seq, int pos, size_t row_bytes) const {
        return (static_cast<size_t>(seq) * n_ctx_ + static_cast<size_t>(pos)) * row_bytes;
    }
    int n_seq_ = 0, n_ctx_ = 0;
    GgmlType k_type_ = GgmlType::kF32, v_type_ = GgmlType::kF32;
    size_t k_row_bytes_ = 0, v_row_bytes_ = 0;
    std::vector<std::vector<uint8_t>> k_, v_;
};

}  // namespace pipelm::model
