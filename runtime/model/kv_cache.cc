#include "runtime/model/kv_cache.h"

#include <new>

#include "runtime/base/error.h"

namespace pipelm::model {

KvCache::KvCache(int n_layers, int n_seq, int n_ctx, int64_t kv_width, GgmlType k_type, GgmlType v_type)
    : n_seq_(n_seq), n_ctx_(n_ctx), k_type_(k_type), v_type_(v_type) {
    for (GgmlType t : {k_type, v_type}) {
        if (t != GgmlType::kF32 && t != GgmlType::kF16 && t != GgmlType::kQ8_0)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "KV cache type ", ggml_type_name(t),
                         " is not supported (use f32, f16 or q8_0)");
        if (kv_width % ggml_type_info(t).block != 0)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "KV cache type ", ggml_type_name(t), " needs head_dim to be a multiple of ",
                         ggml_type_info(t).block);
    }
    k_row_bytes_ = ggml_row_bytes(k_type, kv_width);
    v_row_bytes_ = ggml_row_bytes(v_type, kv_width);
    const size_t per_layer_k = static_cast<size_t>(n_seq) * n_ctx * k_row_bytes_;
    const size_t per_layer_v = static_cast<size_t>(n_seq) * n_ctx * v_row_bytes_;
    try {
        k_.resize(n_layers);
        v_.resize(n_layers);
        for (int l = 0; l < n_layers; ++l) {
            k_[l].assign(per_layer_k, 0);
            v_[l].assign(per_layer_v, 0);
        }
    } catch (const std::bad_alloc&) {
        PIPELM_THROW(ErrorCode::kOutOfMemory, "cannot allocate the KV cache (",
                     bytes_needed(n_layers, n_seq, n_ctx, kv_width, k_type, v_type) >> 20,
                     " MiB): lower --ctx or --parallel, or use --cache-type-k/--cache-type-v f16");
    }
}

uint64_t KvCache::bytes_needed(int n_layers, int n_seq, int n_ctx, int64_t kv_width, GgmlType k_type, GgmlType v_type) {
    return static_cast<uint64_t>(n_layers) * n_seq * n_ctx *
           (ggml_row_bytes(k_type, kv_width) + ggml_row_bytes(v_type, kv_width));
}

uint64_t KvCache::bytes() const {
    uint64_t b = 0;
    for (const auto& x : k_) b += x.size();
    for (const auto& x : v_) b += x.size();
    return b;
}

}  // namespace pipelm::model
