// CUDA launchers of the GLM-4 layer ops: plain host functions that take device pointers and an
// explicit stream, launch, and check the launch (PIPELM_CUDA_CHECK). Each op family lives in one
// .cu file (named after it) and computes what its CPU twin in kernels/ops.h / matmul.h computes,
// with FP32 activations and FP32 (or wider) accumulation unless an Accum below says otherwise.
// No launcher allocates; scratch comes from the caller. Host-compilable (no CUDA C++ here).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention_heads.h"
#include "kernels/cuda/launch.h"
#include "runtime/base/ggml_types.h"

namespace pipelm::kernels::cuda {

// Accum, kGemvMaxTokens and the launch / workspace planning: launch.h (host-only, tested without
// a GPU).

// Throws Error{kCuda} naming the device and CMAKE_CUDA_ARCHITECTURES when the kernels of this
// build cannot run on the current device (no machine code or PTX for its compute capability).
void check_device_supported();

// The launch limits of the current device (cudaDeviceGetAttribute), for launch.h's plans.
DeviceLimits current_device_limits();

// The weight types the kernels below read as stored (embedding tables, matmul weights): f32,
// f16, bf16 and the block types q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl, q4_K, q5_K, q6_K, iq4_xs
// (the CPU's kernels::quant_type_supported). Block-type rows must be whole blocks, 8-byte (at
// least block-size) aligned as cudaMalloc gives them.
bool weight_type_supported(GgmlType type);

// ---- embedding.cu ---------------------------------------------------------------------------
// out[t][:] = row ids[t] of `table` (rows of n_embd elements of `type`, row_bytes apart),
// converted to F32 exactly. type: any weight_type_supported. ids must be in range (checked by caller).
void embedding(GgmlType type, const void* table, size_t row_bytes, const int32_t* ids, int64_t n_tokens,
               int64_t n_embd, float* out, cudaStream_t stream);

// ---- rms_norm.cu ----------------------------------------------------------------------------
// y[r][i] = (x[r][i] * s_r) * w[i], s_r = 1/sqrt(mean_i x[r][i]^2 + eps), sum of squares in double
// (as the CPU). x and y may alias. With accumulate=true: y[r][i] += that value instead (the
// sandwich norm followed by the residual add, fused; same rounding as the two CPU steps).
void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t n_rows, int64_t n,
              float eps, bool accumulate, cudaStream_t stream);

// ---- rope.cu --------------------------------------------------------------------------------
// NORM RoPE in place on x: [n_tokens][n_heads * head_dim] (row stride ld): adjacent pairs
// (2i, 2i+1), 2i < n_rot, of every head rotated by the cos/sin row pos[t] of `cos_sin`
// ([n_pos][n_rot], built by kernels::rope_table on the host). pos: device array. Bit-exact with
// kernels::rope_norm (hd::rope_rotate).
void rope_norm(float* x, int64_t ld, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
               const float* cos_sin, cudaStream_t stream);

// ---- swiglu.cu ------------------------------------------------------------------------------
// out[t][i] = silu(gu[t][i]) * gu[t][n_ff + i] (gate first, then up); out: [n_tokens][n_ff].
// Bit-exact with kernels::swiglu: the CPU's exp and operation order (hd::silu_mul).
void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff, cudaStream_t stream);

// ---- add.cu ---------------------------------------------------------------------------------
void add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream);  // x[i] += y[i]
// x[r][i] += bias[i] for r < n_rows, i < n (row stride ld).
void add_bias_rows(float* x, int64_t ld, const float* bias, int64_t n_rows, int64_t n, cudaStream_t stream);
// Sets *flag = 1 when any of x[0..n) is NaN or ±Inf (leaves it alone otherwise).
void check_finite(const float* x, int64_t n, int* flag, cudaStream_t stream);

// ---- argmax.cu ------------------------------------------------------------------------------
// out[r] = the first index of the largest value of row r (NaNs ignored), as the CPU sampler.
void argmax_rows(const float* x, int64_t ld, int64_t n_rows, int64_t n, int32_t* out, cudaStream_t stream);

// ---- dequant.cu -----------------------------------------------------------------------------
// dst[r][c] (row stride ldd) = element c of row r of src (any weight_type_supported; rows row_bytes
// apart), bit-exact with kernels::dequantize_row. Block types: one thread per 8 values (quant.cuh).
void dequantize_rows(GgmlType type, const void* src, size_t row_bytes, int64_t n_rows, int64_t n_cols, float* dst,
                     int64_t ldd, cudaStream_t stream);
// Activations for a 16-bit GEMM (the Accum::kBF16 / kF16 demonstrations only; never on the FP32
// policy's path): out[r][c] = round16(x[r][c] / s_r), round to nearest even (hd::f32_to_f16 /
// f32_to_bf16); type16: kBF16 or kF16; out is [n_rows][n] (row stride n). With scale != nullptr,
// s_r is the power of two at or above max_c |x[r][c]| (keeps FP16 in range) and scale[r] = s_r;
// otherwise s_r = 1. Values below 2^-14 s_r become f16 subnormals (absolute precision 2^-24 s_r):
// with GLM-4's activation outliers (max/typical up to 1e5) most of a row loses most of its bits.
void split_16(GgmlType type16, const float* x, int64_t ldx, int64_t n_rows, int64_t n, void* out, float* scale,
              cudaStream_t stream);
// y[r][i] *= scale[r] for r < n_rows, i < n (row stride ld).
void scale_rows(float* y, int64_t ld, int64_t n_rows, int64_t n, const float* scale, cudaStream_t stream);
// dst[r][c] = (float) src[r][c] for an FP16 matrix (row strides lds / ldd).
void f16_to_f32(const void* src, int64_t lds, float* dst, int64_t ldd, int64_t n_rows, int64_t n,
                cudaStream_t stream);

// ---- matmul.cu ------------------------------------------------------------------------------
// A weight on the device as kernels::WeightView describes one on the host: `rows` rows of `cols`
// elements of `type` (any weight_type_supported), row_bytes apart (contiguous: ggml_row_bytes).
struct DeviceWeight {
    GgmlType type = GgmlType::kF32;
    const void* data = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
    size_t row_bytes = 0;
};

// Scratch bytes matmul needs for this weight, batch and accumulation (launch.h's
// matmul_workspace_bytes of the weight's shape).
size_t matmul_workspace_bytes(const DeviceWeight& w, int64_t n_tokens, Accum acc);

// y[t * ldy + r] = Σ_c W[r][c] · x[t * ldx + c]  for t < n_tokens, r < w.rows. The path is
// launch.h's matmul_path(w.type, n_tokens, acc).
// acc == kF32 (GLM-4's policy, and the only one for attn_output and ffn_down): FP32 accumulation
// over the exact stored weights and the exact F32 activations, on every path:
//   n_tokens <= kGemvMaxTokens: the GEMV kernel (FP32 FMA; block types decoded in registers,
//     8 values per lane; f16 / bf16 converted exactly);
//   f32 weights: cublasGemmEx FP32 (CUBLAS_COMPUTE_32F, default math mode: no TF32);
//   every other type (f16, bf16 and the block types q8_0, q4_K, ...): a row chunk of the weight
//     dequantized exactly to F32 in the workspace (up to kDequantChunkBytes), then the FP32
//     GEMM per chunk. The activations are never rounded: the former f16 hi + lo split of
//     16-bit-weight prefill lost the typical values of rows with outliers to f16 subnormals
//     (emulated at GLM-4-32B's attn_output / ffn_down K: relative L2 ~1e-3 at max/typical 1e4,
//     ~7e-3 at 1e5, against <= 7e-6 for FP32; cuda_host_test's
//     CudaHostNumerics.TheFormer16BitSplitFailsTheFp32PolicyWithOutliers keeps it as the
//     counter-example).
// acc == kBF16 / kF16 (demonstration only): always cuBLAS; f32 (and dequantized block) weights with
//   CUBLAS_COMPUTE_32F_FAST_16BF / _16F; 16-bit weights with single-rounded activations, and for
//   f16 weights with kF16 a true FP16 accumulation (CUBLAS_COMPUTE_16F, FP16 output converted).
// `handle` is used on `stream` (set here). workspace: matmul_workspace_bytes(w, n_tokens, acc).
void matmul(cublasHandle_t handle, const DeviceWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy,
            int64_t n_tokens, Accum acc, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// The GEMV kernel alone, any n_tokens (processed kGemvMaxTokens at a time); for tests.
void gemv(const DeviceWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n_tokens,
          cudaStream_t stream);

// ---- attention.cu ---------------------------------------------------------------------------
// KV cache layout: per layer one K and one V array [n_seq][n_ctx][kv_dim] of kv_type (f32 or f16),
// kv_dim = n_head_kv * head_dim, rows post-RoPE.
// Row pos[t] of slot seq[t] = k[t] / v[t] (converted to kv_type, round to nearest even).
void kv_store(const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t n_tokens, int64_t kv_dim,
              const int32_t* pos, const int32_t* seq, int n_ctx, GgmlType kv_type, void* k_cache, void* v_cache,
              cudaStream_t stream);

struct AttentionArgs : kernels::AttentionHeads {
    const void* k_cache = nullptr;  // this layer's K / V: [n_seq][n_ctx][kv_dim] of kv_type
    const void* v_cache = nullptr;
    int n_ctx = 0;
    GgmlType kv_type = GgmlType::kF32;
    const int32_t* pos = nullptr;  // device: token t attends to rows [0, pos[t]] of slot seq[t]
    const int32_t* seq = nullptr;
    int max_kv = 0;                // host: max over t of pos[t] + 1
    // Scores scratch: nullptr keeps them in shared memory (needs attention_scores_fit_shared);
    // else a device array of scores_bytes bytes (0: attention_scores_bytes(n_tokens, n_head,
    // max_kv), the whole batch); a smaller one runs the batch in launches of as many tokens as
    // it holds (at least one token's n_head * max_kv floats).
    float* scores = nullptr;
    size_t scores_bytes = 0;
    Accum kq = Accum::kF32;         // accumulator of the K·Q dot products
    Accum softmax_v = Accum::kF32;  // accumulator of softmax · V
};

// True when max_kv scores (and the query) fit in one block's shared memory on the current device
// (the kernels' static shared memory read with cudaFuncGetAttributes, the device's opt-in limit).
bool attention_scores_fit_shared(int head_dim, int max_kv);

// Causal GQA attention, one block per (token, head) (launch.h plan_attention): scores
// (K·Q · scale), softmax in FP32 with the CPU's exp and the sum in double, then
// (Σ_j p_j V_j) · (1 / sum) with FP32 FMAs in j order, as kernels::attention. Query head h reads
// KV head h / (n_head / n_head_kv). Differences from the CPU: the order of the K·Q additions and
// of the double sum (hd_math.h).
void attention(const AttentionArgs& a, cudaStream_t stream);

}  // namespace pipelm::kernels::cuda
