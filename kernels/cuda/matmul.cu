// y = x · Wᵀ on the device: a GEMV kernel for decode-sized batches and cuBLAS for the rest.
// Precision contract (ops_cuda.h): with Accum::kF32 every path accumulates in FP32 over the exact
// stored weights (decoded bit-exactly by quant.cuh, in registers for the GEMV, into an F32 row
// chunk for cuBLAS) and the exact F32 activations, so results match the CPU's FP32 forward to
// FP32 rounding (~1e-6), whatever the activations' dynamic range. The path and the workspace
// come from launch.h (matmul_path, matmul_workspace_bytes), tested on the host.
#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/quant.cuh"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kMaxT = static_cast<int>(kGemvMaxTokens);

using detail::FloatKind;

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }


// y[t][r] = Σ_c W[r][c] x[t][c] for t < n <= kMaxT, float weight types (f32, f16, bf16). One
// warp per row r: lanes stride over the row (16-byte loads when `vec`), FP32 FMA per token, then
// a butterfly sum over the warp.
template <FloatKind kKind>
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

    constexpr int V = detail::values_per_16<kKind>();  // elements per 16-byte load
    if (vec) {
        const int64_t nv = cols / V;
        const uint4* w4 = reinterpret_cast<const uint4*>(wr);
        for (int64_t i = lane; i < nv; i += 32) {
            float wf[V];
            const uint4 u = __ldg(w4 + i);
            const uint32_t words[4] = {u.x, u.y, u.z, u.w};
            detail::unpack16<kKind>(words, wf);
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
            const float wf = detail::load_element(detail::type_of(kKind), wr, c);
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

bool is_block_type(GgmlType t) { return detail::block_values(t) > 0; }

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

// Row-major y[N][M] (ldc) = x[N][K] (ldb) · W[M][K]ᵀ (lda), i.e. column-major C = Aᵀ B (beta = 0).
void gemm_ex(cublasHandle_t h, int64_t M, int64_t N, int64_t K, const void* A, cudaDataType ta, int64_t lda,
             const void* B, cudaDataType tb, int64_t ldb, void* C, cudaDataType tc, int64_t ldc,
             cublasComputeType_t ct) {
    const float one = 1.f, zero = 0.f;
    const __half hone = __float2half(1.f), hzero = __float2half(0.f);
    const bool half_scalars = ct == CUBLAS_COMPUTE_16F;
    const void* alpha = half_scalars ? static_cast<const void*>(&hone) : static_cast<const void*>(&one);
    const void* beta = half_scalars ? static_cast<const void*>(&hzero) : static_cast<const void*>(&zero);
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
    const LaunchConfig& lc = detail::checked(gemv_launch(w.rows));
    const dim3 grid = detail::to_dim3(lc.grid), block = detail::to_dim3(lc.block);
    const auto* wp = static_cast<const uint8_t*>(w.data);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxT) {
        const int nt = static_cast<int>(std::min<int64_t>(kMaxT, n_tokens - t0));
        const float* xt = x + t0 * ldx;
        float* yt = y + t0 * ldy;
        switch (w.type) {
            case GgmlType::kF32:
                gemv_kernel<FloatKind::kF32><<<grid, block, 0, stream>>>(wp, w.row_bytes, w.rows, w.cols, xt, ldx, yt,
                                                                         ldy, nt, vec);
                break;
            case GgmlType::kF16:
                gemv_kernel<FloatKind::kF16><<<grid, block, 0, stream>>>(wp, w.row_bytes, w.rows, w.cols, xt, ldx, yt,
                                                                         ldy, nt, vec);
                break;
            case GgmlType::kBF16:
                gemv_kernel<FloatKind::kBF16><<<grid, block, 0, stream>>>(wp, w.row_bytes, w.rows, w.cols, xt, ldx,
                                                                          yt, ldy, nt, vec);
                break;
            default: {
                const bool launched = detail::visit_block_type(w.type, [&](auto tag) {
                    gemv_block_kernel<decltype(tag)::value><<<grid, block, 0, stream>>>(
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
    return matmul_workspace_bytes(w.type, w.rows, w.cols, n_tokens, acc);
}

void matmul(cublasHandle_t handle, const DeviceWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy,
            int64_t n_tokens, Accum acc, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    if (n_tokens <= 0 || w.rows <= 0) return;
    check_weight(w);
    PIPELM_CHECK(ldx >= w.cols && ldy >= w.rows, "matmul: ldx ", ldx, " / ldy ", ldy, " below the weight's ", w.cols,
                 " x ", w.rows);
    const MatmulPath path = matmul_path(w.type, n_tokens, acc);
    if (path == MatmulPath::kGemv) return gemv(w, x, ldx, y, ldy, n_tokens, stream);
    const size_t need = matmul_workspace_bytes(w, n_tokens, acc);
    PIPELM_CHECK(workspace_bytes >= need, "matmul: workspace of ", workspace_bytes, " bytes, ", need, " needed");
    PIPELM_CUBLAS_CHECK(cublasSetStream(handle, stream));
    const int64_t M = w.rows, K = w.cols, N = n_tokens;
    auto* ws = static_cast<uint8_t*>(workspace);
    switch (path) {
        case MatmulPath::kGemv: return;  // above
        case MatmulPath::kSgemm:
            gemm_ex(handle, M, N, K, w.data, CUDA_R_32F, K, x, CUDA_R_32F, ldx, y, CUDA_R_32F, ldy,
                    compute_type_f32_inputs(acc));
            return;
        case MatmulPath::kGemm16: {  // demonstrations of reduced precision (Accum::kBF16 / kF16)
            const Gemm16Layout L = gemm16_layout(w.type, M, K, N, acc);
            const cudaDataType t16 = w.type == GgmlType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
            void* act = ws + L.act;
            float* scale = L.scaled ? reinterpret_cast<float*>(ws + L.scale) : nullptr;
            split_16(w.type, x, ldx, N, K, act, scale, stream);
            if (L.half_acc) {  // FP16 accumulation: C in FP16, then widened
                void* c16 = ws + L.c16;
                gemm_ex(handle, M, N, K, w.data, CUDA_R_16F, K, act, CUDA_R_16F, K, c16, CUDA_R_16F, M,
                        CUBLAS_COMPUTE_16F);
                f16_to_f32(c16, M, y, ldy, N, M, stream);
                return;
            }
            gemm_ex(handle, M, N, K, w.data, t16, K, act, t16, K, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F);
            if (scale) scale_rows(y, ldy, N, M, scale, stream);
            return;
        }
        case MatmulPath::kDequantSgemm: {
            // Exact F32 weights of a row chunk (f16 / bf16 widened, block types decoded; check_weight
            // validated the type), then an FP32 GEMM: no rounding of weights or activations.
            const int64_t chunk = dequant_chunk_rows(M, K);
            auto* tmp = reinterpret_cast<float*>(ws);
            for (int64_t r0 = 0; r0 < M; r0 += chunk) {
                const int64_t m = std::min(chunk, M - r0);
                dequantize_rows(w.type, static_cast<const uint8_t*>(w.data) + r0 * w.row_bytes, w.row_bytes, m, K, tmp,
                                K, stream);
                gemm_ex(handle, m, N, K, tmp, CUDA_R_32F, K, x, CUDA_R_32F, ldx, y + r0, CUDA_R_32F, ldy,
                        compute_type_f32_inputs(acc));
            }
            return;
        }
    }
}

}  // namespace pipelm::kernels::cuda
