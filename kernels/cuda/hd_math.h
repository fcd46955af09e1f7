// Per-element math of the CUDA kernels that has a CPU twin, host/device (hd.h): the CPU's exp
// (so that softmax and SwiGLU give the CPU's bits, not those of CUDA's expf), SiLU·up, the
// RoPE rotation of one pair, and the pieces of the attention softmax. Each function performs
// the same IEEE operations in the same order as the CPU code named beside it;
// tests/cuda/cuda_host_test.cc checks them bit for bit against the CPU kernels without a GPU.
#pragma once
#include <cstdint>

#include "kernels/cuda/hd.h"

namespace pipelm::kernels::cuda::hd {

// ---- exp: kernels/cpu/attention_cpu.cc exp_scalar / exp8_avx2 ---------------------------------
// x clamped to [-105, 89] (NaN returned as is); n = rint(x log2 e); r = (x - n ln2_hi) - n ln2_lo
// (two FMAs); p = degree-7 Taylor polynomial of e^r by Horner with FMAs; result (p 2^n1) 2^n2
// with n1 = n >> 1, n2 = n - n1. About 1 ulp on [-87, 88]; subnormal results round once.
constexpr float kExpLo = -105.f, kExpHi = 89.f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.428606820309417232e-6f;

PIPELM_HD float pow2i(int32_t e) { return as_float(static_cast<uint32_t>(e + 127) << 23); }  // e in [-126, 127]

PIPELM_HD float exp_cpu(float x) {
    if (x != x) return x;
    x = kExpLo > x ? kExpLo : x;
    x = kExpHi < x ? kExpHi : x;
    const float n = rint(mul(x, kLog2e));
    float r = fma(n, -kLn2Hi, x);
    r = fma(n, -kLn2Lo, r);
    float p = 1.f / 5040;
    p = fma(p, r, 1.f / 720);
    p = fma(p, r, 1.f / 120);
    p = fma(p, r, 1.f / 24);
    p = fma(p, r, 1.f / 6);
    p = fma(p, r, 1.f / 2);
    p = fma(p, r, 1.f);
    p = fma(p, r, 1.f);
    const int32_t ni = static_cast<int32_t>(n);  // exact: n is integral, |n| <= 152
    const int32_t n1 = ni >> 1, n2 = ni - n1;
    return mul(mul(p, pow2i(n1)), pow2i(n2));
}

// ---- SwiGLU: attention_cpu.cc silu_mul_scalar ---------------------------------------------------
// silu(g) * u = g / (1 + exp(-g)) * u in this order.
PIPELM_HD float silu_mul(float g, float u) { return mul(div(g, add(1.0f, exp_cpu(-g))), u); }

// ---- RoPE: kernels/cpu/ops_cpu.cc rope_norm --------------------------------------------------
// (x0, x1) -> (x0 c - x1 s, x0 s + x1 c) with c, s from kernels::rope_table (built on the host in
// double precision: the device never computes an angle).
PIPELM_HD void rope_rotate(float x0, float x1, float c, float s, float* y0, float* y1) {
    *y0 = sub(mul(x0, c), mul(x1, s));
    *y1 = add(mul(x0, s), mul(x1, c));
}

// ---- attention softmax: attention_cpu.cc softmax_avx2 / softmax_scalar ------------------------
// max: a NaN score is skipped (std::max(mx, s) on the CPU).
PIPELM_HD float softmax_max(float mx, float s) { return s > mx ? s : mx; }
// numerator of score s given the maximum mx: exp(s - mx) in FP32.
PIPELM_HD float softmax_exp(float s, float mx) { return exp_cpu(sub(s, mx)); }
// The sum of the numerators is taken in double (a float converts exactly; each addition rounds
// once); 1 / sum in double, rounded to float once. Only the order of the additions differs
// between the CPU (8 lanes, fixed tree) and the device (strided threads, butterfly, per-warp
// partials): ~n·2^-53 relative, below the float rounding of 1/sum except in rare ties.
PIPELM_HD double softmax_sum_add(double sum, float p) { return sum + static_cast<double>(p); }
PIPELM_HD float softmax_inv(double sum) { return static_cast<float>(1.0 / sum); }

}  // namespace pipelm::kernels::cuda::hd
