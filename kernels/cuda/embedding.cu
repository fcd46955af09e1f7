// Token embedding lookup: gathers rows of the embedding table (kept on the device in its file
// type: f32, f16, bf16 or q8_0) and converts them to F32 exactly. One block per token.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

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

}  // namespace

void embedding(GgmlType type, const void* table, size_t row_bytes, const int32_t* ids, int64_t n_tokens,
               int64_t n_embd, float* out, cudaStream_t stream) {
    if (n_tokens <= 0 || n_embd <= 0) return;
    PIPELM_CHECK(type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16 || type == GgmlType::kQ8_0,
                 "CUDA embedding: table type ", ggml_type_name(type), " is not kept on the device (f32, f16, bf16, q8_0)");
    PIPELM_CHECK(n_tokens <= 0x7fffffff, "CUDA embedding: too many tokens for one launch");
    embedding_kernel<<<static_cast<unsigned>(n_tokens), kThreads, 0, stream>>>(
        type, static_cast<const uint8_t*>(table), row_bytes, ids, n_embd, out);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
