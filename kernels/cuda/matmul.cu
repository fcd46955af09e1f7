// y = x · Wᵀ on the device: a GEMV kernel for decode-sized batches and cuBLAS for the rest.
// Precision contract (ops_cuda.h): with Accum::kF32 every path accumulates in FP32 and uses the
// exact stored weights (block types decoded bit-exactly by quant.cuh, in registers for the GEMV,
// into an F32 row chunk for cuBLAS); the activations stay F32 (GEMV, f32 and block-type weights)
// or are carried as hi + lo 16-bit halves (bf16/f16 weights), so results match the CPU's FP32
// forward to ~1e-6.
#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/quant.cuh"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kGemvWarps = 4;  // one warp per weight row
constexpr int kGemvThreads = kGemvWarps * 32;
constexpr int kMaxT = static_cast<int>(kGemvMaxTokens);
constexpr size_t kChunkBytes = size_t(256) << 20;  // F32 copy of a row chunk of a block-type weight
constexpr size_t kAlign = 256;

enum Kind { kKindF32 = 0, kKindF16 = 1, kKindBF16 = 2 };  // the float weight types of gemv_kernel

size_t align_up(size_t b) { return (b + kAlign - 1) / kAlign * kAlign; }
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// 16 bytes of a weight row -> 4 (f32) or 8 (f16, bf16) floats, little-endian element order.
template <int kKind>
__device__ __forceinline__ void unpack16(const uint4& u, float* f) {
    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        if constexpr (kKind == kKindF32) {
            f[k] = __uint_as_float(v[k]);
        } else if constexpr (kKind == kKindF16) {
            f[2 * k] = detail::f16_bits_to_f32(static_cast<uint16_t>(v[k] & 0xffffu));
            f[2 * k + 1] = detail::f16_bits_to_f32(static_cast<uint16_t>(v[k] >> 16));
        } else {
            f[2 * k] = __uint_as_float(v[k] << 16);
            f[2 * k + 1] = __uint_as_float(v[k] & 0xffff0000u);
        }
    }
}

template <int kKind>
__device__ __forceinline__ float load_scalar(const uint8_t* row, int64_t c) {
    if constexpr (kKind == kKindF32) return reinterpret_cast<const float*>(row)[c];
    else if constexpr (kKind == kKindF16) return detail::f16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
    else return detail::bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
}

// y[t][r] = Σ_c W[r][c] x[t][c] for t < n <= kMaxT, float weight types (f32, f16, bf16). One
// warp per row r: lanes stride over the row (16-byte loads when `vec`), FP32 FMA per token, then
// a butterfly sum over the warp.
template <int kKind>
__global__ void __launch_bounds__(kGemvThreads)
gemv_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t rows, int64_t cols, const float* __restrict__ x,
            int64_t ldx, float* __restrict__ y, int64_t ldy, int n, bool vec) {
    const int lane = threadIdx.x & 31;
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
    if (r >= rows) return;  // warp-uniform; no block barrier below
    const uint8_t* wr = w + r * row_bytes;
    float acc[kMaxT];
#pragma unroll
    for (int t = 0; t < kMaxT; ++t) acc[t] = 0.f;

    constexpr int V = kKind == kKindF32 ? 4 : 8;  // elements per 16-byte load
    if (vec) {
        const int64_t nv = cols / V;
        const uint4* w4 = reinterpret_cast<const uint4*>(wr);
        for (int64_t i = lane; i < nv; i += 32) {
            float wf[V];
            unpack16<kKind>(__ldg(w4 + i), wf);
            const int64_t c = i * V;
#pragma unroll
            for (int t = 0; t < kMaxT; ++t) {
                if (t < n) {
                    const float4* xt = reinterpret_cast<const float4*>(x + t * ldx + c);
#pragma unroll
                    for (int k = 0; k < V / 4; ++k) {
                        const float4 xv = __ldg(xt + k);
                        acc[t] = fmaf(wf[4 * k], xv.x, acc[t]);
                        acc[t] = fmaf(wf[4 * k + 1], xv.y, acc[t]);
                        acc[t] = fmaf(wf[4 * k + 2], xv.z, acc[t]);
                        acc[t] = fmaf(wf[4 * k + 3], xv.w, acc[t]);
                    }
                }
            }
        }
    } else {
        for (int64_t c = lane; c < cols; c += 32) {
            const float wf = load_scalar<kKind>(wr, c);
#pragma unroll
            for (int t = 0; t < kMaxT; ++t)
                if (t < n) acc[t] = fmaf(wf, __ldg(x + t * ldx + c), acc[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < kMaxT; ++t) {
        if (t < n) {
            const float s = detail::warp_sum(acc[t]);
            if (lane == 0) y[t * ldy + r] = s;
        }
    }
}

// The same product for a block-type weight T (quant.cuh): one warp per row r, each lane decodes
// 8 consecutive weights (one scale) in registers per step, the warp covers 256 values per step
// (one K-quant super-block, eight 32-value blocks); FP32 FMA per token over the exact decoded
// weights, then a butterfly sum over the warp. x: two 16-byte loads per token when `vec`.
template <GgmlType T>
__global__ void __launch_bounds__(kGemvThreads)
gemv_block_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t rows, int64_t cols,
                  const float* __restrict__ x, int64_t ldx, float* __restrict__ y, int64_t ldy, int n, bool vec) {
    const int lane = threadIdx.x & 31;
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
    if (r >= rows) return;  // warp-uniform; no block barrier below
    const uint8_t* wr = w + r * row_bytes;
    float acc[kMaxT];
#pragma unroll
    for (int t = 0; t < kMaxT; ++t) acc[t] = 0.f;
    for (int64_t c = 8 * lane; c < cols; c += 8 * 32) {
        float wf[8];
        detail::decode8_at<T>(wr, c, wf);
#pragma unroll
        for (int t = 0; t < kMaxT; ++t) {
            if (t < n) {
                const float* xt = x + t * ldx + c;
                float xv[8];
                if (vec) {
                    const float4 a = __ldg(reinterpret_cast<const float4*>(xt));
                    const float4 b = __ldg(reinterpret_cast<const float4*>(xt) + 1);
                    xv[0] = a.x, xv[1] = a.y, xv[2] = a.z, xv[3] = a.w;
                    xv[4] = b.x, xv[5] = b.y, xv[6] = b.z, xv[7] = b.w;
                } else {
#pragma unroll
                    for (int k = 0; k < 8; ++k) xv[k] = __ldg(xt + k);
                }
#pragma unroll
                for (int k = 0; k < 8; ++k) acc[t] = fmaf(wf[k], xv[k], acc[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < kMaxT; ++t) {
        if (t < n) {
            const float s = detail::warp_sum(acc[t]);
            if (lane == 0) y[t * ldy + r] = s;
        }
    }
}

// Workspace layout of the 16-bit-weight cuBLAS path (one definition for sizing and use).
struct Split16Layout {
    bool two_pass = false;  // hi and lo (Accum::kF32)
    bool half_acc = false;  // f16 weights with Accum::kF16: CUBLAS_COMPUTE_16F into an FP16 C
    bool scaled = false;    // f16 activations scaled per row by a power of two
    size_t hi = 0, lo = 0, scale = 0, c16 = 0, total = 0;  // byte offsets, total bytes
};

Split16Layout split16_layout(const DeviceWeight& w, int64_t n, Accum acc) {
    Split16Layout L;
    const bool f16 = w.type == GgmlType::kF16;
    L.two_pass = acc == Accum::kF32;
    L.half_acc = f16 && acc == Accum::kF16;
    L.scaled = f16 && !L.half_acc;
    const size_t act = align_up(static_cast<size_t>(n) * w.cols * 2);
    size_t at = 0;
    L.hi = at, at += act;
    if (L.two_pass) L.lo = at, at += act;
    if (L.scaled) L.scale = at, at += align_up(static_cast<size_t>(n) * sizeof(float));
    if (L.half_acc) L.c16 = at, at += align_up(static_cast<size_t>(n) * w.rows * 2);
    L.total = at;
    return L;
}

bool is_block_type(GgmlType t) { return detail::block_values(t) > 0; }

// Rows of a block-type weight dequantized to F32 at a time on the cuBLAS path.
int64_t chunk_rows(const DeviceWeight& w) {
    const int64_t by_bytes = static_cast<int64_t>(kChunkBytes / (static_cast<size_t>(w.cols) * sizeof(float)));
    return std::max<int64_t>(1, std::min<int64_t>(w.rows, by_bytes));
}

cublasComputeType_t compute_type_f32_inputs(Accum acc) {
    switch (acc) {
        case Accum::kF32: return CUBLAS_COMPUTE_32F;  // with CUBLAS_DEFAULT_MATH: true FP32, no TF32
        case Accum::kBF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
        case Accum::kF16: return CUBLAS_COMPUTE_32F_FAST_16F;
    }
    return CUBLAS_COMPUTE_32F;
}

int to_int(int64_t v, const char* what) {
    PIPELM_CHECK(v >= 0 && v <= INT_MAX, "matmul: ", what, " = ", v, " exceeds cuBLAS's 32-bit sizes");
    return static_cast<int>(v);
}

// Row-major y[N][M] (ldc) = x[N][K] (ldb) · W[M][K]ᵀ (lda), i.e. column-major C = Aᵀ B.
void gemm_ex(cublasHandle_t h, int64_t M, int64_t N, int64_t K, const void* A, cudaDataType ta, int64_t lda,
             const void* B, cudaDataType tb, int64_t ldb, bool accumulate, void* C, cudaDataType tc, int64_t ldc,
             cublasComputeType_t ct) {
    const float one = 1.f, zero = 0.f;
    const __half hone = __float2half(1.f), hzero = __float2half(0.f);
    const bool half_scalars = ct == CUBLAS_COMPUTE_16F;
    const void* alpha = half_scalars ? static_cast<const void*>(&hone) : static_cast<const void*>(&one);
    const void* beta = half_scalars ? (accumulate ? static_cast<const void*>(&hone) : static_cast<const void*>(&hzero))
                                    : (accumulate ? static_cast<const void*>(&one) : static_cast<const void*>(&zero));
    PIPELM_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, to_int(M, "rows"), to_int(N, "tokens"),
                                     to_int(K, "cols"), alpha, A, ta, to_int(lda, "lda"), B, tb, to_int(ldb, "ldx"),
                                     beta, C, tc, to_int(ldc, "ldy"), ct, CUBLAS_GEMM_DEFAULT));
}

void check_weight(const DeviceWeight& w) {
    size_t elt = 0;
    switch (w.type) {
        case GgmlType::kF32: elt = 4; break;
        case GgmlType::kF16:
        case GgmlType::kBF16: elt = 2; break;
        default:
            if (!is_block_type(w.type))
                PIPELM_THROW(ErrorCode::kUnsupported, "CUDA matmul: weight type ", ggml_type_name(w.type),
                             " is not a device weight type (", supported_ggml_types(), ")");
            detail::check_block_rows(w.type, w.data, w.row_bytes, w.cols, "CUDA matmul");
            PIPELM_CHECK(w.row_bytes == ggml_row_bytes(w.type, w.cols), "matmul: ", ggml_type_name(w.type),
                         " rows must be contiguous");
            return;
    }
    PIPELM_CHECK(w.row_bytes == elt * static_cast<size_t>(w.cols), "matmul: weight rows must be contiguous");
}

}  // namespace

void gemv(const DeviceWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n_tokens,
          cudaStream_t stream) {
    if (n_tokens <= 0 || w.rows <= 0) return;
    check_weight(w);
    const int64_t V = w.type == GgmlType::kF32 ? 4 : 8;
    const bool x_vec = aligned16(x) && ldx % 4 == 0;  // block types: 8 values per lane at multiples of 8
    const bool vec = x_vec && w.cols % V == 0 && w.row_bytes % 16 == 0 && aligned16(w.data);
    const int64_t blocks = (w.rows + kGemvWarps - 1) / kGemvWarps;
    PIPELM_CHECK(blocks <= INT_MAX, "gemv: ", w.rows, " rows is too many for one launch");
    const auto* wp = static_cast<const uint8_t*>(w.data);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxT) {
        const int nt = static_cast<int>(std::min<int64_t>(kMaxT, n_tokens - t0));
        const float* xt = x + t0 * ldx;
        float* yt = y + t0 * ldy;
        const unsigned grid = static_cast<unsigned>(blocks);
        switch (w.type) {
            case GgmlType::kF32:
                gemv_kernel<kKindF32><<<grid, kGemvThreads, 0, stream>>>(wp, w.row_bytes, w.rows, w.cols, xt, ldx, yt,
                                                                         ldy, nt, vec);
                break;
            case GgmlType::kF16:
                gemv_kernel<kKindF16><<<grid, kGemvThreads, 0, stream>>>(wp, w.row_bytes, w.rows, w.cols, xt, ldx, yt,
                                                                         ldy, nt, vec);
                break;
            case GgmlType::kBF16:
                gemv_kernel<kKindBF16><<<grid, kGemvThreads, 0, stream>>>(wp, w.row_bytes, w.rows, w.cols, xt, ldx, yt,
                                                                          ldy, nt, vec);
                break;
            default: {
                const bool launched = detail::visit_block_type(w.type, [&](auto tag) {
                    gemv_block_kernel<decltype(tag)::value><<<grid, kGemvThreads, 0, stream>>>(
                        wp, w.row_bytes, w.rows, w.cols, xt, ldx, yt, ldy, nt, x_vec);
                });
                if (!launched) PIPELM_THROW(ErrorCode::kInternal, "gemv: unreachable weight type");
                break;
            }
        }
        PIPELM_CUDA_CHECK_LAUNCH();
    }
}

size_t matmul_workspace_bytes(const DeviceWeight& w, int64_t n_tokens, Accum acc) {
    if (n_tokens <= 0 || w.rows <= 0) return 0;
    if (acc == Accum::kF32 && n_tokens <= kGemvMaxTokens) return 0;
    switch (w.type) {
        case GgmlType::kF32: return 0;
        case GgmlType::kF16:
        case GgmlType::kBF16: return split16_layout(w, n_tokens, acc).total;
        default:
            if (!is_block_type(w.type)) return 0;
            return align_up(static_cast<size_t>(chunk_rows(w)) * w.cols * sizeof(float));
    }
}

void matmul(cublasHandle_t handle, const DeviceWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy,
            int64_t n_tokens, Accum acc, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    if (n_tokens <= 0 || w.rows <= 0) return;
    check_weight(w);
    PIPELM_CHECK(ldx >= w.cols && ldy >= w.rows, "matmul: ldx ", ldx, " / ldy ", ldy, " below the weight's ", w.cols,
                 " x ", w.rows);
    if (acc == Accum::kF32 && n_tokens <= kGemvMaxTokens) return gemv(w, x, ldx, y, ldy, n_tokens, stream);
    const size_t need = matmul_workspace_bytes(w, n_tokens, acc);
    PIPELM_CHECK(workspace_bytes >= need, "matmul: workspace of ", workspace_bytes, " bytes, ", need, " needed");
    PIPELM_CUBLAS_CHECK(cublasSetStream(handle, stream));
    const int64_t M = w.rows, K = w.cols, N = n_tokens;
    auto* ws = static_cast<uint8_t*>(workspace);
    switch (w.type) {
        case GgmlType::kF32:
            gemm_ex(handle, M, N, K, w.data, CUDA_R_32F, K, x, CUDA_R_32F, ldx, false, y, CUDA_R_32F, ldy,
                    compute_type_f32_inputs(acc));
            return;
        case GgmlType::kF16:
        case GgmlType::kBF16: {
            const Split16Layout L = split16_layout(w, N, acc);
            const cudaDataType t16 = w.type == GgmlType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
            void* hi = ws + L.hi;
            void* lo = L.two_pass ? ws + L.lo : nullptr;
            float* scale = L.scaled ? reinterpret_cast<float*>(ws + L.scale) : nullptr;
            split_16(w.type, x, ldx, N, K, hi, lo, scale, stream);
            if (L.half_acc) {  // demonstration of FP16 accumulation: C in FP16, then widened
                void* c16 = ws + L.c16;
                gemm_ex(handle, M, N, K, w.data, CUDA_R_16F, K, hi, CUDA_R_16F, K, false, c16, CUDA_R_16F, M,
                        CUBLAS_COMPUTE_16F);
                f16_to_f32(c16, M, y, ldy, N, M, stream);
                return;
            }
            gemm_ex(handle, M, N, K, w.data, t16, K, hi, t16, K, false, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F);
            if (lo) gemm_ex(handle, M, N, K, w.data, t16, K, lo, t16, K, true, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F);
            if (scale) scale_rows(y, ldy, N, M, scale, stream);
            return;
        }
        default: {  // block types: exact F32 weights of a row chunk, then an FP32 GEMM (check_weight)
            const int64_t chunk = chunk_rows(w);
            auto* tmp = reinterpret_cast<float*>(ws);
            for (int64_t r0 = 0; r0 < M; r0 += chunk) {
                const int64_t m = std::min(chunk, M - r0);
                dequantize_rows(w.type, static_cast<const uint8_t*>(w.data) + r0 * w.row_bytes, w.row_bytes, m, K, tmp,
                                K, stream);
                gemm_ex(handle, m, N, K, tmp, CUDA_R_32F, K, x, CUDA_R_32F, ldx, false, y + r0, CUDA_R_32F, ldy,
                        compute_type_f32_inputs(acc));
            }
            return;
        }
    }
}

}  // namespace pipelm::kernels::cuda
