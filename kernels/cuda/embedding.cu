// Token embedding lookup: gathers rows of the embedding table (kept on the device in its file
// type: f32, f16, bf16 or any block type of quant.cuh) and converts them to F32 exactly. One
// block per token.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/quant.cuh"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
embedding_kernel(GgmlType type, const uint8_t* __restrict__ table, size_t row_bytes, const int32_t* __restrict__ ids,
                 int64_t n_embd, float* __restrict__ out) {
    const int64_t t = blockIdx.x;
    const uint8_t* row = table + static_cast<size_t>(ids[t]) * row_bytes;
    for (int64_t c = threadIdx.x; c < n_embd; c += blockDim.x) out[t * n_embd + c] = detail::load_element(type, row, c);
}

// Block types: each thread decodes 8 consecutive values (quant.cuh) of the token's row.
template <GgmlType T>
__global__ void __launch_bounds__(kThreads)
embedding_block_kernel(const uint8_t* __restrict__ table, size_t row_bytes, const int32_t* __restrict__ ids,
                       int64_t n_embd, float* __restrict__ out, bool vec) {
    const int64_t t = blockIdx.x;
    const uint8_t* row = table + static_cast<size_t>(ids[t]) * row_bytes;
    for (int64_t c = 8 * threadIdx.x; c < n_embd; c += 8 * blockDim.x) {
        float v[8];
        detail::decode8_at<T>(row, c, v);
        detail::store8(out + t * n_embd + c, v, vec);
    }
}

}  // namespace

void embedding(GgmlType type, const void* table, size_t row_bytes, const int32_t* ids, int64_t n_tokens,
               int64_t n_embd, float* out, cudaStream_t stream) {
    if (n_tokens <= 0 || n_embd <= 0) return;
    PIPELM_CHECK(weight_type_supported(type), "CUDA embedding: table type ", ggml_type_name(type),
                 " is not a device weight type (", supported_ggml_types(), ")");
    const LaunchConfig& lc = detail::checked(row_launch("embedding", n_tokens, kThreads));
    const dim3 grid = detail::to_dim3(lc.grid), block = detail::to_dim3(lc.block);
    const auto* tp = static_cast<const uint8_t*>(table);
    const bool is_block = detail::visit_block_type(type, [&](auto tag) {
        constexpr GgmlType T = decltype(tag)::value;
        detail::check_block_rows(T, table, row_bytes, n_embd, "CUDA embedding");
        const bool vec = reinterpret_cast<uintptr_t>(out) % 16 == 0 && n_embd % 4 == 0;
        embedding_block_kernel<T><<<grid, block, 0, stream>>>(tp, row_bytes, ids, n_embd, out, vec);
    });
    if (!is_block) embedding_kernel<<<grid, block, 0, stream>>>(type, tp, row_bytes, ids, n_embd, out);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
