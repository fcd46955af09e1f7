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
//   hs[t*ldd + b]  int16 pair (Σ q[0..16), Σ q[16..32)) of block b (low, high half), zeros past
//                  K/32: the exact bias corrections of the packed kernels that read a biased
//                  code c = v + B as unsigned (Σ m v q = Σ m c q - B Σ m q)
struct ActQ8 {
    const int32_t* hs = nullptr;
    const int8_t* q = nullptr;
    const int8_t* qi = nullptr;
    const float* d = nullptr;
    const float* s = nullptr;
    int64_t ldq = 0, ldd = 0;
    int64_t nb = 0;  // blocks per token (K / 32)
};

// Natural-order int8 values q[0..K) of one token -> its interleaved qi row (ldd / 8 groups).
void interleave_act_q8(const int8_t* q, int64_t K, int64_t ldd, int8_t* qi);

// Weights repacked at load for the kQ8 kernels (Matrix::prepare with repack_q8; format id
// kPackLanes), for every type with an integer kernel. Row by row, ng records of one group of 8
// sub-blocks of 32 values (8 blocks of the 32-value types, one block of the 256-value ones),
// each exactly as large as the GGUF bytes it holds, with the values reordered so that 32-byte
// vector k holds values 4k..4k+3 of sub-block j in dword lane j (the layout of ActQ8::qi):
//   factors   Q8_0, Q4_0, Q5_0, IQ4_NL: 8 fp16 d (lane j = block j); Q4_1, Q5_1: 8 d, then 8 m;
//             Q4_K, Q5_K: the block's d, dmin and 12 packed scale bytes; IQ4_XS: its 8 header
//             bytes; Q6_K: d, then 8 int8 scales of elements 0..15 of sub-block j, then 8 of
//             elements 16..31
//   H         5-bit types: one vector, byte e of lane j has bit 4 of value 4k + e in bit k;
//             Q6_K: H_0, H_1, byte e of lane j of H_a has bits 4..5 of value 4(4a + i) + e in
//             bits 2i..2i+1
//   P_0..P_3  byte e of lane j: low 4 bits of value 4k + e | those of value 16 + 4k + e << 4, so
//             vector k is P_k & 15 and vector k + 4 is P_k >> 4 (Q8_0: 8 vectors of int8 values)
// The values are the stored codes (nibble index, biased value). Sizes: Q8_0 272, Q4_0 / IQ4_NL
// / Q4_K 144, Q4_1 160, Q5_0 / Q5_K 176, Q5_1 192, Q6_K 210, IQ4_XS 136. Blocks past nb are
// zero bytes. Decode reads the records sequentially in the lane order the integer dot products
// need: no per-group transpose or hadd tree, no scale gather.
// (Measured alternative: records of 4 rows interleaved, so that a 4-row tile is one stream,
// decode 1 token ~25 % slower on the 2-core AMD VM: several streams per thread keep more reads
// in flight than the prefetchers give one stream.)
constexpr int kPackLanes = 1;
bool packable_type(GgmlType t);
int64_t packed_record_bytes(GgmlType t);
struct PackedWeight {
    GgmlType type = GgmlType::kQ8_0;
    const uint8_t* data = nullptr;
    int64_t rows = 0, nb = 0, ng = 0;  // rows, 32-value blocks per row, groups per row
    size_t rec_bytes = 0;              // one group record
    size_t row_bytes = 0;              // ng records
    size_t bytes = 0;                  // whole matrix
    const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};
PackedWeight packed_layout(GgmlType type, int64_t rows, int64_t cols);
// Repacks rows [r0, r1) of `w` into `out` (layout of packed_layout(w.type, ...)).
void pack_rows(const WeightView& w, const PackedWeight& layout, uint8_t* out, int64_t r0, int64_t r1);
// Rows [r0, r1) of a packed weight times all n tokens of `a`: the same bits as
// matmul_q8_block_avx2 on the original weight.
void matmul_q8_packed_avx2(const PackedWeight& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                           int64_t n);
// The same with vpdpbusd (matmul_q8_vnni_impl.h): AVX-512-VNNI (zmm GEMM, ymm decode) and
// AVX-VNNI (ymm). Same bits.
void matmul_q8_packed_avx512vnni(const PackedWeight& w, int64_t r0, int64_t r1, const ActQ8& a, float* y,
                                 int64_t ldy, int64_t n);
void matmul_q8_packed_avxvnni(const PackedWeight& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                              int64_t n);

// Types with an integer kernel (see act_quant_supported).
bool q8_type_supported(GgmlType t);

// Quantizes one token: x[0..K) -> q[0..K), d, s and hs [0..ldd) (zero-padded past K/32; the
// block sums of s and the half sums of hs come from the same pass). Both give the same bits
// (IEEE division and round-half-even).
void quantize_act_q8_scalar(const float* x, int64_t K, int64_t ldd, int8_t* q, float* d, float* s, int32_t* hs);
void quantize_act_q8_avx2(const float* x, int64_t K, int64_t ldd, int8_t* q, float* d, float* s, int32_t* hs);

// One thread's share: rows [r0, r1) of w, all n tokens of `a` (y[t*ldy + r]). Same bits.
void matmul_q8_block_scalar(const WeightView& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                            int64_t n);
void matmul_q8_block_avx2(const WeightView& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                          int64_t n);

}  // namespace pipelm::kernels::detail
