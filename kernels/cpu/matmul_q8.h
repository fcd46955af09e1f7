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

// Q8_0 weights repacked at load for the kQ8 kernels (Matrix::prepare with repack_q8; format id
// kPackQ8_0x8). Row by row, ng = ceil(nb / 8) group records of 272 bytes, each holding the bytes
// of 8 GGUF blocks: the 8 fp16 scales, then 8 vectors of 32 bytes, vector k holding bytes
// 4k..4k+3 of the quants of block j in dword lane j (the layout of ActQ8::qi); blocks past nb
// are zero. Decode thus reads the file's bytes, sequentially, in the lane order the integer dot
// products need: no per-group transpose or hadd tree, and one load for the 8 scales.
// (Measured alternative: records of 4 rows interleaved, so that a 4-row tile is one stream,
// decode 1 token ~25 % slower on the 2-core AMD VM: several streams per thread keep more reads
// in flight than the prefetchers give one stream.)
constexpr int kPackQ8_0x8 = 1;
constexpr int64_t kPackQ8_0GroupBytes = 16 + 256;
struct PackedQ8_0 {
    const uint8_t* data = nullptr;
    int64_t rows = 0, nb = 0, ng = 0;
    size_t row_bytes = 0;  // ng records
    size_t bytes = 0;      // whole matrix
    const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};
PackedQ8_0 packed_q8_0_layout(int64_t rows, int64_t cols);
// Repacks rows [r0, r1) of a Q8_0 weight into `out` (layout.data, writable).
void pack_q8_0_rows(const WeightView& w, const PackedQ8_0& layout, uint8_t* out, int64_t r0, int64_t r1);
// Rows [r0, r1) of a packed Q8_0 weight times all n tokens of `a`: the same bits as
// matmul_q8_block_avx2 on the original weight.
void matmul_q8_packed_avx2(const PackedQ8_0& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                           int64_t n);

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
