// Causal GQA attention over the device KV cache, and the KV-cache store.
//
// attention_kernel: one block per (token, query head), the straightforward version.
//   1. q -> shared memory; one warp per key row j (lanes over head_dim):
//      s_j = (K_j · q) * scale, accumulated in the Accum the policy names (FP32 for GLM-4);
//   2. softmax in FP32: max, p_j = expf(s_j - max), the sum in double (as the CPU);
//   3. one thread per output element d: o_d = Σ_j (p_j / sum) V_j[d], FP32 FMA (or the policy's).
// Scores live in shared memory (up to ~40k positions on A100/H100) or in a global scratch.
// With Accum::kF16 the dot products / weighted sums run in __half on purpose: GLM-4's K·Q
// exceeds 65504 and overflows, which the NaN/Inf check after the layer then reports.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kDefaultSmem = 48 * 1024;
constexpr int kStaticSmemReserve = 1024;  // block_sum / block_max scratch

// Accumulator arithmetic per Accum type.
__device__ __forceinline__ float to_acc(float v, float*) { return v; }
__device__ __forceinline__ __half to_acc(float v, __half*) { return __float2half_rn(v); }
__device__ __forceinline__ __nv_bfloat16 to_acc(float v, __nv_bfloat16*) { return __float2bfloat16_rn(v); }
__device__ __forceinline__ float fma_acc(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ __half fma_acc(__half a, __half b, __half c) { return __hfma(a, b, c); }
__device__ __forceinline__ __nv_bfloat16 fma_acc(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __hfma(a, b, c);
}
__device__ __forceinline__ float from_acc(float v) { return v; }
__device__ __forceinline__ float from_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float from_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float load_kv(const float* p) { return *p; }
__device__ __forceinline__ float load_kv(const __half* p) { return __half2float(*p); }

// K_j · q over head_dim, lanes strided, then a butterfly over the warp (every lane gets it).
template <typename A, typename KV>
__device__ __forceinline__ float dot_qk(const float* q, const KV* k, int hd, int lane) {
    A* tag = nullptr;
    A acc = to_acc(0.f, tag);
    for (int d = lane; d < hd; d += 32) acc = fma_acc(to_acc(q[d], tag), to_acc(load_kv(k + d), tag), acc);
    return from_acc(detail::warp_sum(acc));
}

// Σ_j (p_j * inv) V_j[d] for one d; v points at V_0[d], rows `stride` elements apart.
template <typename A, typename KV>
__device__ __forceinline__ float weighted_v(const float* p, float inv, const KV* v, int64_t stride, int n) {
    A* tag = nullptr;
    A acc = to_acc(0.f, tag);
    for (int j = 0; j < n; ++j) acc = fma_acc(to_acc(p[j] * inv, tag), to_acc(load_kv(v + j * stride), tag), acc);
    return from_acc(acc);
}

template <typename KV>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionArgs a) {
    extern __shared__ float smem[];
    const int64_t bid = blockIdx.x;
    const int64_t t = bid / a.n_head;
    const int h = static_cast<int>(bid % a.n_head);
    const int g = h / (a.n_head / a.n_head_kv);
    const int hd = a.head_dim;
    const int n = a.pos[t] + 1;
    const int64_t kv_dim = static_cast<int64_t>(a.n_head_kv) * hd;
    const int64_t slot = static_cast<int64_t>(a.seq[t]) * a.n_ctx * kv_dim;
    const KV* kb = static_cast<const KV*>(a.k_cache) + slot + static_cast<int64_t>(g) * hd;
    const KV* vb = static_cast<const KV*>(a.v_cache) + slot + static_cast<int64_t>(g) * hd;
    float* qs = smem;
    float* sc = a.scores ? a.scores + bid * a.max_kv : smem + ((hd + 3) & ~3);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;

    const float* q = a.q + t * a.ldq + static_cast<int64_t>(h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[d];
    __syncthreads();

    // 1. Scores and their maximum.
    float mx = -INFINITY;
    for (int j = warp; j < n; j += n_warps) {
        const KV* kr = kb + j * kv_dim;
        float dot;
        if (a.kq == Accum::kF16) dot = dot_qk<__half>(qs, kr, hd, lane);
        else if (a.kq == Accum::kBF16) dot = dot_qk<__nv_bfloat16>(qs, kr, hd, lane);
        else dot = dot_qk<float>(qs, kr, hd, lane);
        const float s = dot * a.scale;
        if (lane == 0) sc[j] = s;
        mx = s > mx ? s : mx;  // as std::max(mx, s) on the CPU: a NaN score is skipped
    }
    mx = detail::block_max(mx);  // its barriers also publish sc[]

    // 2. Softmax numerators, sum in double.
    double sum = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float p = expf(sc[j] - mx);
        sc[j] = p;
        sum += p;
    }
    sum = detail::block_sum(sum);
    const float inv = static_cast<float>(1.0 / sum);

    // 3. softmax · V.
    float* o = a.out + t * a.ldo + static_cast<int64_t>(h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float r;
        if (a.softmax_v == Accum::kF16) r = weighted_v<__half>(sc, inv, vb + d, kv_dim, n);
        else if (a.softmax_v == Accum::kBF16) r = weighted_v<__nv_bfloat16>(sc, inv, vb + d, kv_dim, n);
        else r = weighted_v<float>(sc, inv, vb + d, kv_dim, n);
        o[d] = r;
    }
}

template <typename KV>
__global__ void __launch_bounds__(kThreads)
kv_store_kernel(const float* __restrict__ k, int64_t ldk, const float* __restrict__ v, int64_t ldv, int64_t kv_dim,
                const int32_t* __restrict__ pos, const int32_t* __restrict__ seq, int n_ctx, KV* k_cache, KV* v_cache) {
    const int64_t t = blockIdx.x;
    const int64_t row = (static_cast<int64_t>(seq[t]) * n_ctx + pos[t]) * kv_dim;
    for (int64_t i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        if constexpr (sizeof(KV) == 4) {
            k_cache[row + i] = k[t * ldk + i];
            v_cache[row + i] = v[t * ldv + i];
        } else {
            k_cache[row + i] = __float2half_rn(k[t * ldk + i]);
            v_cache[row + i] = __float2half_rn(v[t * ldv + i]);
        }
    }
}

size_t smem_bytes(int head_dim, int max_kv, bool scores_in_smem) {
    return (static_cast<size_t>((head_dim + 3) & ~3) + (scores_in_smem ? static_cast<size_t>(max_kv) : 0)) *
           sizeof(float);
}

int smem_optin_limit() {
    int dev = 0, limit = 0;
    PIPELM_CUDA_CHECK(cudaGetDevice(&dev));
    PIPELM_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return limit - kStaticSmemReserve;
}

void check_kv_type(GgmlType t) {
    PIPELM_CHECK(t == GgmlType::kF32 || t == GgmlType::kF16, "CUDA KV cache: type ", ggml_type_name(t),
                 " is not supported (use --cache-type-k/--cache-type-v f32 or f16)");
}

}  // namespace

bool attention_scores_fit_shared(int head_dim, int max_kv) {
    const size_t need = smem_bytes(head_dim, max_kv, true);
    return need <= static_cast<size_t>(kDefaultSmem - kStaticSmemReserve) ||
           need <= static_cast<size_t>(smem_optin_limit());
}

void kv_store(const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t n_tokens, int64_t kv_dim,
              const int32_t* pos, const int32_t* seq, int n_ctx, GgmlType kv_type, void* k_cache, void* v_cache,
              cudaStream_t stream) {
    if (n_tokens <= 0 || kv_dim <= 0) return;
    check_kv_type(kv_type);
    PIPELM_CHECK(n_tokens <= 0x7fffffff, "kv_store: too many tokens for one launch");
    const unsigned grid = static_cast<unsigned>(n_tokens);
    if (kv_type == GgmlType::kF32)
        kv_store_kernel<float><<<grid, kThreads, 0, stream>>>(k, ldk, v, ldv, kv_dim, pos, seq, n_ctx,
                                                              static_cast<float*>(k_cache), static_cast<float*>(v_cache));
    else
        kv_store_kernel<__half><<<grid, kThreads, 0, stream>>>(k, ldk, v, ldv, kv_dim, pos, seq, n_ctx,
                                                               static_cast<__half*>(k_cache),
                                                               static_cast<__half*>(v_cache));
    PIPELM_CUDA_CHECK_LAUNCH();
}

void attention(const AttentionArgs& a, cudaStream_t stream) {
    if (a.n_tokens <= 0 || a.n_head <= 0) return;
    check_kv_type(a.kv_type);
    PIPELM_CHECK(a.n_head_kv > 0 && a.n_head % a.n_head_kv == 0, "attention: ", a.n_head, " query heads are not a multiple of ",
                 a.n_head_kv, " KV heads");
    PIPELM_CHECK(a.head_dim > 0 && a.max_kv > 0 && a.max_kv <= a.n_ctx, "attention: bad head_dim ", a.head_dim,
                 " or max_kv ", a.max_kv, " (n_ctx ", a.n_ctx, ")");
    const int64_t blocks = a.n_tokens * a.n_head;
    PIPELM_CHECK(blocks <= 0x7fffffff, "attention: too many (token, head) pairs for one launch");
    const size_t smem = smem_bytes(a.head_dim, a.max_kv, a.scores == nullptr);
    const bool f32 = a.kv_type == GgmlType::kF32;
    if (smem > static_cast<size_t>(kDefaultSmem - kStaticSmemReserve)) {
        PIPELM_CHECK(smem <= static_cast<size_t>(smem_optin_limit()), "attention: ", a.max_kv,
                     " scores do not fit in shared memory; pass a global scores scratch");
        if (f32)
            PIPELM_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(smem)));
        else
            PIPELM_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(smem)));
    }
    const unsigned grid = static_cast<unsigned>(blocks);
    if (f32) attention_kernel<float><<<grid, kThreads, smem, stream>>>(a);
    else attention_kernel<__half><<<grid, kThreads, smem, stream>>>(a);
    PIPELM_CUDA_CHECK_LAUNCH();
}

}  // namespace pipelm::kernels::cuda
