// Launch geometry, shared-memory and workspace sizing of the CUDA kernels as plain host
// functions (no CUDA headers; launch.cc builds with g++). The launchers in kernels/cuda/*.cu take
// their grids, blocks, shared memory and workspaces from here, and tests/cuda/cuda_host_test.cc
// checks every plan against the limits of sm_80 and sm_90 for GLM-4 shapes (up to 32B and
// beyond) without a GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/base/ggml_types.h"

namespace pipelm::kernels::cuda {

// Accumulation precision requested by the model's precision policy for one op class.
// kF32 is the only correct choice for GLM-4; the others exist to demonstrate its failure.
enum class Accum { kF32, kBF16, kF16 };
const char* accum_name(Accum a);

// The limits a launch must respect (CUDA programming guide, "Technical specifications per
// compute capability"; at run time read with cudaDeviceGetAttribute, device_limits.cc).
struct DeviceLimits {
    std::string name;                       // "sm_80"
    int max_threads_per_block = 1024;
    int64_t max_grid_x = 2147483647;        // 2^31 - 1
    int64_t max_grid_y = 65535, max_grid_z = 65535;
    size_t smem_per_block = 48 << 10;       // static + dynamic shared memory without opt-in
    size_t smem_per_block_optin = 48 << 10; // with cudaFuncAttributeMaxDynamicSharedMemorySize
};
DeviceLimits sm80_limits();  // A100: 163 KiB opt-in
DeviceLimits sm90_limits();  // H100 / H200: 227 KiB opt-in

struct Dim3 {
    int64_t x = 1, y = 1, z = 1;
};

struct LaunchConfig {
    const char* kernel = "";
    Dim3 grid, block;
    size_t static_smem = 0;   // the kernel's __shared__ arrays (cudaFuncGetAttributes().sharedSizeBytes)
    size_t dynamic_smem = 0;  // the launch's third <<<>>> argument
    // Above the default per-block shared memory: the launcher must raise the kernel's
    // cudaFuncAttributeMaxDynamicSharedMemorySize to dynamic_smem first.
    bool needs_optin(const DeviceLimits& d) const { return static_smem + dynamic_smem > d.smem_per_block; }
};

// "" when `c` can be launched on a device with limits `d`, else what is exceeded (grid, block,
// shared memory), with the numbers.
std::string launch_problem(const LaunchConfig& c, const DeviceLimits& d);
// Throws Error{kInvalidArgument} with launch_problem's text (before any launch).
void check_launch(const LaunchConfig& c, const DeviceLimits& d);

// ---- element-wise and row kernels ---------------------------------------------------------------
// One block of `threads` per row: grid.x = n_rows (rms_norm, rope, kv_store, embedding, argmax,
// add_bias_rows, the dequantizers and the 16-bit rounding of activations).
LaunchConfig row_launch(const char* kernel, int64_t n_rows, int threads);
// Grid-stride loop over n elements: min(ceil(n / threads), max_blocks) blocks (swiglu, add,
// check_finite).
LaunchConfig grid_stride_launch(const char* kernel, int64_t n, int threads, int64_t max_blocks = 65535);

// ---- matmul ----------------------------------------------------------------------------------
// Up to this many tokens, matmul runs the GEMV kernel (weights read once, FP32 math).
constexpr int64_t kGemvMaxTokens = 8;
constexpr int kGemvWarps = 4;  // one warp per weight row
constexpr int kGemvThreads = kGemvWarps * 32;
// The GEMV over `rows` weight rows (one launch per kGemvMaxTokens tokens).
LaunchConfig gemv_launch(int64_t rows);

// How matmul computes y = x Wᵀ (ops_cuda.h has the precision contract of each path).
enum class MatmulPath {
    kGemv,          // n_tokens <= kGemvMaxTokens with Accum::kF32: FP32 FMA over the exact weights
    kSgemm,         // f32 weights: cublasGemmEx FP32 (CUBLAS_COMPUTE_32F, no TF32)
    kDequantSgemm,  // any other weight type: exact F32 weights of a row chunk in the workspace, then FP32 GEMM
    kGemm16,        // demonstration only (Accum::kBF16 / kF16 on f16 / bf16 weights): activations
                    // rounded once to the weight's 16-bit type, 16-bit cuBLAS GEMM
};
MatmulPath matmul_path(GgmlType type, int64_t n_tokens, Accum acc);
const char* matmul_path_name(MatmulPath p);

// F32 bytes of one dequantized row chunk (kDequantSgemm) at most.
constexpr size_t kDequantChunkBytes = size_t(256) << 20;
// Weight rows dequantized to F32 at a time on the kDequantSgemm path (>= 1, <= rows).
int64_t dequant_chunk_rows(int64_t rows, int64_t cols);

// Workspace layout of the kGemm16 path (one definition for sizing and use): byte offsets.
struct Gemm16Layout {
    bool half_acc = false;  // f16 weights with Accum::kF16: CUBLAS_COMPUTE_16F into an FP16 C
    bool scaled = false;    // f16 activations scaled per row by a power of two (FP16 range)
    size_t act = 0, scale = 0, c16 = 0, total = 0;
};
Gemm16Layout gemm16_layout(GgmlType type, int64_t rows, int64_t cols, int64_t n_tokens, Accum acc);

// Scratch bytes matmul needs for this weight shape, batch and accumulation (256-byte aligned
// pieces; 0 for the GEMV and the f32 SGEMM).
size_t matmul_workspace_bytes(GgmlType type, int64_t rows, int64_t cols, int64_t n_tokens, Accum acc);

// ---- attention -----------------------------------------------------------------------------
constexpr int kAttentionThreads = 128;

struct AttentionShape {
    int64_t n_tokens = 0;
    int n_head = 0;
    int head_dim = 0;
    int max_kv = 0;  // longest K/V range of a token in the batch (max pos + 1)
};

// Dynamic shared memory of one (token, head) block: the query (head_dim floats, padded to 4)
// and, when the scores live in shared memory, max_kv floats.
size_t attention_dynamic_smem(int head_dim, int max_kv, bool scores_in_shared);

// True when max_kv scores (and the query) fit in one block's shared memory, with opt-in.
bool attention_scores_fit_shared(int head_dim, int max_kv, size_t static_smem, const DeviceLimits& d);

// Global scratch for the scores of `tokens` tokens (tokens * n_head * max_kv floats).
size_t attention_scores_bytes(int64_t tokens, int n_head, int max_kv);

struct AttentionPlan {
    bool scores_in_shared = true;  // else in the global scratch
    int64_t tokens_per_launch = 0;  // the batch runs in launches of at most this many tokens
    LaunchConfig launch;            // of a full launch (tokens_per_launch tokens)
};

// The attention launch for shape s on a device with limits d, the attention kernel's static
// shared memory being static_smem (read at run time). Scores stay in shared memory when
// static + dynamic fits the opt-in limit (the launcher opts in above 48 KiB); otherwise they go
// to a global scratch of scratch_bytes (0: as large as the whole batch needs), and the batch is
// split into launches of as many tokens as it holds. Throws when not even one token's scores
// fit the scratch, or the grid would exceed the device's.
AttentionPlan plan_attention(const AttentionShape& s, size_t static_smem, const DeviceLimits& d,
                             bool global_scratch, size_t scratch_bytes);

}  // namespace pipelm::kernels::cuda
