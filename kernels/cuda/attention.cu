// Causal GQA attention over the device KV cache, and the KV-cache store.
//
// attention_kernel: one block per (token, query head), the straightforward version.
//   1. q -> shared memory; one warp per key row j (lanes over head_dim):
//      s_j = (K_j · q) * scale, accumulated in the Accum the policy names (FP32 for GLM-4);
//   2. softmax in FP32 with the CPU's pieces (hd_math.h): max, p_j = exp(s_j - max) with the
//      CPU's exp, the sum in double;
//   3. one thread per output element d: o_d = (Σ_j p_j V_j[d]) · (1 / sum), FP32 FMAs in j order
//      then one multiply, as the CPU (with a reduced-precision Accum: Σ_j (p_j / sum) V_j[d]).
// Scores live in shared memory (launch.h plan_attention, against the kernel's static shared
// memory read with cudaFuncGetAttributes: up to 41.5k positions of 128-dim heads on sm_80, 57.9k
// on sm_90) or in a global scratch, the batch then split into launches of as many tokens as the
// scratch holds.
// With Accum::kF16 the dot products / weighted sums run in __half on purpose: GLM-4's K·Q
// exceeds 65504 and overflows, which the NaN/Inf check after the layer then reports.
// The KV cache holds f32 or f16 (as uint16_t bits, converted with hd::f16_to_f32 / f32_to_f16).
#include <algorithm>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/hd_math.h"
#include "kernels/cuda/ops_cuda.h"

namespace pipelm::kernels::cuda {
namespace {

constexpr int kThreads = kAttentionThreads;

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
__device__ __forceinline__ float load_kv(const uint16_t* p) { return hd::f16_to_f32(*p); }

// K_j · q over head_dim, lanes strided, then a butterfly over the warp (every lane gets it).
template <typename A, typename KV>
__device__ __forceinline__ float dot_qk(const float* q, const KV* k, int dim, int lane) {
    A* tag = nullptr;
    A acc = to_acc(0.f, tag);
    for (int d = lane; d < dim; d += 32) acc = fma_acc(to_acc(q[d], tag), to_acc(load_kv(k + d), tag), acc);
    return from_acc(detail::warp_sum(acc));
}

// The softmax-weighted sum of V for one d; v points at V_0[d], rows `stride` elements apart.
// FP32 (the policy's): (Σ_j p_j V_j[d]) · inv, FMAs from +0 in j order, as the CPU. A reduced
// precision A: Σ_j (p_j · inv) V_j[d] (normalized first, so that only K·Q can overflow).
template <typename A, typename KV>
__device__ __forceinline__ float weighted_v(const float* p, float inv, const KV* v, int64_t stride, int n) {
    if constexpr (std::is_same_v<A, float>) {
        float acc = 0.f;
        for (int j = 0; j < n; ++j) acc = hd::fma(p[j], load_kv(v + j * stride), acc);
        return hd::mul(acc, inv);
    } else {
        A* tag = nullptr;
        A acc = to_acc(0.f, tag);
        for (int j = 0; j < n; ++j)
            acc = fma_acc(to_acc(hd::mul(p[j], inv), tag), to_acc(load_kv(v + j * stride), tag), acc);
        return from_acc(acc);
    }
}

template <typename KV>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionArgs a) {
    extern __shared__ float smem[];
    const int64_t bid = blockIdx.x;
    const int64_t t = bid / a.n_head;
    const int h = static_cast<int>(bid % a.n_head);
    const int g = h / (a.n_head / a.n_head_kv);
    const int dim = a.head_dim;
    const int n = a.pos[t] + 1;
    const int64_t kv_dim = static_cast<int64_t>(a.n_head_kv) * dim;
    const int64_t slot = static_cast<int64_t>(a.seq[t]) * a.n_ctx * kv_dim;
    const KV* kb = static_cast<const KV*>(a.k_cache) + slot + static_cast<int64_t>(g) * dim;
    const KV* vb = static_cast<const KV*>(a.v_cache) + slot + static_cast<int64_t>(g) * dim;
    float* qs = smem;
    float* sc = a.scores ? a.scores + bid * a.max_kv : smem + ((dim + 3) & ~3);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;

    const float* q = a.q + t * a.ldq + static_cast<int64_t>(h) * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) qs[d] = q[d];
    __syncthreads();

    // 1. Scores and their maximum.
    float mx = -INFINITY;
    for (int j = warp; j < n; j += n_warps) {
        const KV* kr = kb + j * kv_dim;
        float dot;
        if (a.kq == Accum::kF16) dot = dot_qk<__half>(qs, kr, dim, lane);
        else if (a.kq == Accum::kBF16) dot = dot_qk<__nv_bfloat16>(qs, kr, dim, lane);
        else dot = dot_qk<float>(qs, kr, dim, lane);
        const float s = hd::mul(dot, a.scale);
        if (lane == 0) sc[j] = s;
        mx = hd::softmax_max(mx, s);  // a NaN score is skipped, as std::max(mx, s) on the CPU
    }
    mx = detail::block_max(mx);  // its barriers also publish sc[]

    // 2. Softmax numerators (the CPU's exp), sum in double.
    double sum = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float p = hd::softmax_exp(sc[j], mx);
        sc[j] = p;
        sum = hd::softmax_sum_add(sum, p);
    }
    sum = detail::block_sum(sum);
    const float inv = hd::softmax_inv(sum);

    // 3. softmax · V.
    float* o = a.out + t * a.ldo + static_cast<int64_t>(h) * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
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
            k_cache[row + i] = hd::f32_to_f16(k[t * ldk + i]);
            v_cache[row + i] = hd::f32_to_f16(v[t * ldv + i]);
        }
    }
}

void check_kv_type(GgmlType t) {
    PIPELM_CHECK(t == GgmlType::kF32 || t == GgmlType::kF16, "CUDA KV cache: type ", ggml_type_name(t),
                 " is not supported (use --cache-type-k/--cache-type-v f32 or f16)");
}

// Static shared memory of the attention kernel for this KV type (block_max / block_sum scratch),
// as compiled for the current device.
template <typename KV>
size_t static_smem() {
    cudaFuncAttributes attr{};
    PIPELM_CUDA_CHECK(cudaFuncGetAttributes(&attr, attention_kernel<KV>));
    return attr.sharedSizeBytes;
}

template <typename KV>
void launch_attention(const AttentionArgs& a, const DeviceLimits& limits, cudaStream_t stream) {
    AttentionShape shape;
    shape.n_tokens = a.n_tokens;
    shape.n_head = a.n_head;
    shape.head_dim = a.head_dim;
    shape.max_kv = a.max_kv;
    const AttentionPlan plan = plan_attention(shape, static_smem<KV>(), limits, a.scores != nullptr, a.scores_bytes);
    const size_t dyn = plan.launch.dynamic_smem;
    if (plan.launch.needs_optin(limits))
        PIPELM_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<KV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(dyn)));
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += plan.tokens_per_launch) {
        AttentionArgs c = a;  // tokens [t0, t0 + n) of the batch; the scratch restarts at 0
        c.n_tokens = std::min(plan.tokens_per_launch, a.n_tokens - t0);
        c.q = a.q + t0 * a.ldq;
        c.out = a.out + t0 * a.ldo;
        c.pos = a.pos + t0;
        c.seq = a.seq + t0;
        const unsigned grid = static_cast<unsigned>(c.n_tokens * a.n_head);
        attention_kernel<KV><<<grid, detail::to_dim3(plan.launch.block), dyn, stream>>>(c);
        PIPELM_CUDA_CHECK_LAUNCH();
    }
}

}  // namespace

DeviceLimits current_device_limits() {
    int dev = 0;
    PIPELM_CUDA_CHECK(cudaGetDevice(&dev));
    auto attr = [dev](cudaDeviceAttr what) {
        int v = 0;
        PIPELM_CUDA_CHECK(cudaDeviceGetAttribute(&v, what, dev));
        return v;
    };
    DeviceLimits d;
    d.name = "sm_" + std::to_string(attr(cudaDevAttrComputeCapabilityMajor)) +
             std::to_string(attr(cudaDevAttrComputeCapabilityMinor));
    d.max_threads_per_block = attr(cudaDevAttrMaxThreadsPerBlock);
    d.max_grid_x = attr(cudaDevAttrMaxGridDimX);
    d.max_grid_y = attr(cudaDevAttrMaxGridDimY);
    d.max_grid_z = attr(cudaDevAttrMaxGridDimZ);
    d.smem_per_block = static_cast<size_t>(attr(cudaDevAttrMaxSharedMemoryPerBlock));
    d.smem_per_block_optin = static_cast<size_t>(attr(cudaDevAttrMaxSharedMemoryPerBlockOptin));
    return d;
}

bool attention_scores_fit_shared(int head_dim, int max_kv) {
    const size_t st = std::max(static_smem<float>(), static_smem<uint16_t>());
    return attention_scores_fit_shared(head_dim, max_kv, st, current_device_limits());
}

void kv_store(const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t n_tokens, int64_t kv_dim,
              const int32_t* pos, const int32_t* seq, int n_ctx, GgmlType kv_type, void* k_cache, void* v_cache,
              cudaStream_t stream) {
    if (n_tokens <= 0 || kv_dim <= 0) return;
    check_kv_type(kv_type);
    const LaunchConfig& lc = detail::checked(row_launch("kv_store", n_tokens, kThreads));
    const dim3 grid = detail::to_dim3(lc.grid), block = detail::to_dim3(lc.block);
    if (kv_type == GgmlType::kF32)
        kv_store_kernel<float><<<grid, block, 0, stream>>>(k, ldk, v, ldv, kv_dim, pos, seq, n_ctx,
                                                           static_cast<float*>(k_cache), static_cast<float*>(v_cache));
    else
        kv_store_kernel<uint16_t><<<grid, block, 0, stream>>>(k, ldk, v, ldv, kv_dim, pos, seq, n_ctx,
                                                              static_cast<uint16_t*>(k_cache),
                                                              static_cast<uint16_t*>(v_cache));
    PIPELM_CUDA_CHECK_LAUNCH();
}

void attention(const AttentionArgs& a, cudaStream_t stream) {
    if (a.n_tokens <= 0 || a.n_head <= 0) return;
    check_kv_type(a.kv_type);
    PIPELM_CHECK(a.n_head_kv > 0 && a.n_head % a.n_head_kv == 0, "attention: ", a.n_head,
                 " query heads are not a multiple of ", a.n_head_kv, " KV heads");
    PIPELM_CHECK(a.head_dim > 0 && a.max_kv > 0 && a.max_kv <= a.n_ctx, "attention: bad head_dim ", a.head_dim,
                 " or max_kv ", a.max_kv, " (n_ctx ", a.n_ctx, ")");
    const DeviceLimits limits = current_device_limits();
    if (a.kv_type == GgmlType::kF32) launch_attention<float>(a, limits, stream);
    else launch_attention<uint16_t>(a, limits, stream);
}

}  // namespace pipelm::kernels::cuda
