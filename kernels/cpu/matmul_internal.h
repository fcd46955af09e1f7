// Internal interface between kernels/cpu/matmul_cpu.cc (dispatch, threading, scalar path) and
// the per-ISA kernels (matmul_avx2.cc). Not for use outside kernels/.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/matmul.h"

namespace pipelm::kernels::detail {

// Instruction-set levels, each a superset of the one before it except that kAvx2Vnni (AVX-VNNI,
// VEX-encoded vpdpbusd on ymm: Alder Lake, Zen 5) is not implied by kAvx512 (Skylake-X has
// AVX-512 without any VNNI). What each level changes:
//   kAvx2        every kernel in AVX2+FMA+F16C (matmul_avx2.cc, matmul_q8_avx2.cc, attention);
//   kAvx2Vnni    + the integer (kQ8) kernels on repacked weights with vpdpbusd ymm
//                  (matmul_q8_vnni.cc);
//   kAvx512      + the exact (kNone) prefill GEMM in zmm tiles, the F32/F16/BF16 decode GEMV in zmm
//                  row pairs (matmul_avx512.cc);
//   kAvx512Vnni  + the kQ8 kernels with vpdpbusd zmm/ymm (matmul_q8_vnni.cc).
// Every level gives the same bits (kernels/matmul.h).
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx2Vnni = 2, kAvx512 = 3, kAvx512Vnni = 4 };

// What this CPU supports (CPUID + XGETBV), independent of any override.
bool cpu_has_avx2_fma_f16c();
bool cpu_has_avx512f();
bool cpu_supports(Isa isa);
// The ISA matmul uses now: the best supported one, or $PIPELM_CPU_ISA (read once; a name of
// force_cpu_isa, ignored when this CPU cannot run it), unless overridden by force_cpu_isa().
Isa active_isa();
const char* isa_name(Isa isa);
// Level predicates of the kernels.
inline bool isa_avx2(Isa i) { return i != Isa::kScalar; }
inline bool isa_avx512(Isa i) { return i == Isa::kAvx512 || i == Isa::kAvx512Vnni; }
inline bool isa_vnni(Isa i) { return i == Isa::kAvx2Vnni || i == Isa::kAvx512Vnni; }

// Accumulation contract shared by every ISA (see matmul.h): for output (r, t), eight float
// lanes; lane l accumulates w[k]*x[k] for k ≡ l (mod 8), k increasing, with a fused multiply-add
// (single rounding), starting from +0; w[k] is the exact dequantize_row value; lanes past the
// row end see w = x = 0. Then one fixed reduction:
//   y = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
inline float reduce8(const float* a) {
    const float h0 = a[0] + a[4], h1 = a[1] + a[5], h2 = a[2] + a[6], h3 = a[3] + a[7];
    return (h0 + h2) + (h1 + h3);
}

// One thread's share: rows [r0, r1) of w, all n tokens (y[t*ldy + r]). No threading inside.
void matmul_block_scalar(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                         int64_t ldy, int64_t n);
void matmul_block_avx2(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                       int64_t ldy, int64_t n);
// AVX-512: the GEMM in zmm tiles and the float types' GEMV in zmm row pairs (matmul_avx512.cc),
// the other types' GEMV as matmul_block_avx2.
void matmul_block_avx512(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                         int64_t ldy, int64_t n);

// n_tokens at or below which the AVX2 path uses the in-register GEMV kernel (weights decoded in
// registers per group of <= 3 tokens) instead of the panel GEMM. Both give identical bits; this
// is only a speed choice: cheap-to-decode types (f32, f16, bf16, q8_0) stay on the GEMV up to 8
// tokens, the 4-6-bit types switch at 4 tokens (decoding a panel once beats re-decoding per
// token group). Exposed for tests.
inline int64_t gemv_max_tokens(GgmlType t) {
    return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16 || t == GgmlType::kQ8_0 ? 8 : 3;
}

// Per-thread scratch (64-byte aligned, grows on demand, never shrinks); valid until the next
// call on the same thread with slot `slot` (0 .. 4; 3 holds a matmul call's int8 activations, 4 the
// token pairs of the AVX-512-VNNI few-token decode).
float* thread_scratch(int slot, size_t n_floats);

}  // namespace pipelm::kernels::detail
