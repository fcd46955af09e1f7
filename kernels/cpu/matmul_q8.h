// Internal interface of the ActQuant::kQ8 matmul (int8 activations, integer dot products with
// the quantized weights): activation quantization and the per-ISA row-block kernels. The
// numerical contract is the kQ8 paragraph of kernels/matmul.h. Not for use outside kernels/.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/matmul.h"

namespace pipelm::kernels::detail {

// One matmul call's activations in kQ8 form, n tokens of K values (K % 32 == 0), ng = ceil(K/256)
// groups of 8 blocks per token (a partial last group is zero-padded):
//   qi[t*ldq + 256*g + 32*k + 4*j + e]  int8 value 4k + e of block 8g + j (blocks interleaved
//                                       by 4-byte lanes, lane j = block j; ldq = 256 * ng)
//   d[t*ldd + b]  block scales amax/127, b < K/32, then zeros up to ldd = 8 * ng
//   s[t*ldd + b]  fl(d * Σ q) of the block, zeros past K/32
//   q[t*ldq + 32*b + e]                 the same values in natural order (zero-padded)
struct ActQ8 {
    const int8_t* q = nullptr;
    const int8_t* qi = nullptr;
    const float* d = nullptr;
    const float* s = nullptr;
    int64_t ldq = 0, ldd = 0;
    int64_t nb = 0;  // blocks per token (K / 32)
};

// Natural-order int8 values q[0..K) of one token -> its interleaved qi row (ldd / 8 groups).
void interleave_act_q8(const int8_t* q, int64_t K, int64_t ldd, int8_t* qi);

// Types with an integer kernel (see act_quant_supported).
bool q8_type_supported(GgmlType t);

// Quantizes one token: x[0..K) -> q[0..K), d[0..ldd), s[0..ldd) (zero-padded past K/32).
// Both give the same bits (IEEE division and round-half-even).
void quantize_act_q8_scalar(const float* x, int64_t K, int64_t ldd, int8_t* q, float* d, float* s);
void quantize_act_q8_avx2(const float* x, int64_t K, int64_t ldd, int8_t* q, float* d, float* s);

// One thread's share: rows [r0, r1) of w, all n tokens of `a` (y[t*ldy + r]). Same bits.
void matmul_q8_block_scalar(const WeightView& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                            int64_t n);
void matmul_q8_block_avx2(const WeightView& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                          int64_t n);

}  // namespace pipelm::kernels::detail
