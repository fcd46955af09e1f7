// GGUF block formats decoded on the device (spec §7.2), eight consecutive values at a time,
// bit-exact with kernels/cpu/quant_cpu.cc: the same float operations in the same order
// (e.g. Q4_K: d1 = d*sc, m1 = dmin*m, y = d1*q - m1, each rounded on its own), written with
// hd::mul / hd::add / hd::sub (__fmul_rn & co on the device) so that nvcc cannot contract a
// multiply and an add into one FMA (the CPU file is compiled with -ffp-contract=off); fp16 -> f32
// is exact (cvt.f32.f16). Also the element loads of the float weight types (f32, f16, bf16).
// Used by the GEMV (matmul.cu), the row dequantizer of prefill (dequant.cu) and the embedding.
//
// Host/device (hd.h): g++ compiles this header too, and tests/cuda/cuda_host_test.cc checks every
// decoder, at the granularity the kernels call it (decode8 per 8 values, unpack16 per 16 bytes,
// load_element per value), bit for bit against kernels::dequantize_row without a GPU.
// Bits differ from the CPU only for NaN results: the GPU writes its canonical NaN 0x7fffffff
// where x86 keeps the NaN's payload (a NaN / inf f16 scale times a code).
#pragma once
#include <cstdint>

#include "kernels/cuda/hd.h"
#include "runtime/base/error.h"
#include "runtime/base/ggml_types.h"

namespace pipelm::kernels::cuda::detail {

// Values and bytes per block of the block types the device reads (0 for the others).
PIPELM_HD constexpr int block_values(GgmlType t) {
    switch (t) {
        case GgmlType::kQ4_0:
        case GgmlType::kQ4_1:
        case GgmlType::kQ5_0:
        case GgmlType::kQ5_1:
        case GgmlType::kQ8_0:
        case GgmlType::kIQ4_NL: return 32;
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K:
        case GgmlType::kQ6_K:
        case GgmlType::kIQ4_XS: return 256;
        default: return 0;
    }
}
PIPELM_HD constexpr int block_bytes(GgmlType t) {
    switch (t) {
        case GgmlType::kQ4_0: return 18;
        case GgmlType::kQ4_1: return 20;
        case GgmlType::kQ5_0: return 22;
        case GgmlType::kQ5_1: return 24;
        case GgmlType::kQ8_0: return 34;
        case GgmlType::kIQ4_NL: return 18;
        case GgmlType::kQ4_K: return 144;
        case GgmlType::kQ5_K: return 176;
        case GgmlType::kQ6_K: return 210;
        case GgmlType::kIQ4_XS: return 136;
        default: return 0;
    }
}

// Alignment (bytes) the decoders need of a block's start: the largest power of two dividing
// the block size, at most 8 (the widest load below).
PIPELM_HD constexpr int block_align(GgmlType t) {
    int a = 1;
    while (a < 8 && block_bytes(t) % (2 * a) == 0) a *= 2;
    return a;
}

// Host-side check of block-type rows as the kernels read them: n_cols a multiple of the block,
// rows row_bytes apart (room for the row, a multiple of block_align), data block_align-aligned
// (cudaMalloc gives 256).
inline void check_block_rows(GgmlType t, const void* data, size_t row_bytes, int64_t n_cols, const char* op) {
    const int bv = block_values(t), al = block_align(t);
    PIPELM_CHECK(bv > 0 && n_cols % bv == 0, op, ": ", ggml_type_name(t), " rows of ", n_cols,
                 " values are not whole blocks of ", bv);
    const size_t need = static_cast<size_t>(n_cols / bv) * block_bytes(t);
    PIPELM_CHECK(row_bytes >= need && row_bytes % al == 0, op, ": ", ggml_type_name(t), " rows ", row_bytes,
                 " bytes apart (a row holds ", need, " bytes; the stride must be a multiple of ", al, ")");
    PIPELM_CHECK(reinterpret_cast<uintptr_t>(data) % al == 0, op, ": ", ggml_type_name(t), " data at ", data,
                 " is not ", al, "-byte aligned");
}

template <GgmlType T>
struct TypeTag {
    static constexpr GgmlType value = T;
};

// Calls f(TypeTag<T>{}) for the block type t (the ten types above) and returns true; returns
// false, calling nothing, for any other type (f32 / f16 / bf16 have their own paths).
template <typename F>
bool visit_block_type(GgmlType t, F&& f) {
    switch (t) {
        case GgmlType::kQ4_0: f(TypeTag<GgmlType::kQ4_0>{}); return true;
        case GgmlType::kQ4_1: f(TypeTag<GgmlType::kQ4_1>{}); return true;
        case GgmlType::kQ5_0: f(TypeTag<GgmlType::kQ5_0>{}); return true;
        case GgmlType::kQ5_1: f(TypeTag<GgmlType::kQ5_1>{}); return true;
        case GgmlType::kQ8_0: f(TypeTag<GgmlType::kQ8_0>{}); return true;
        case GgmlType::kIQ4_NL: f(TypeTag<GgmlType::kIQ4_NL>{}); return true;
        case GgmlType::kQ4_K: f(TypeTag<GgmlType::kQ4_K>{}); return true;
        case GgmlType::kQ5_K: f(TypeTag<GgmlType::kQ5_K>{}); return true;
        case GgmlType::kQ6_K: f(TypeTag<GgmlType::kQ6_K>{}); return true;
        case GgmlType::kIQ4_XS: f(TypeTag<GgmlType::kIQ4_XS>{}); return true;
        default: return false;
    }
}

// The IQ4_NL / IQ4_XS codebook (ggml kvalues_iq4nl) as four little-endian words of int8, looked
// up with __byte_perm (hd::byte_perm): registers only (a table in memory would be indexed per lane).
PIPELM_HD constexpr uint32_t pack_i8x4(int a, int b, int c, int d) {
    return static_cast<uint32_t>(a & 0xff) | static_cast<uint32_t>(b & 0xff) << 8 |
           static_cast<uint32_t>(c & 0xff) << 16 | static_cast<uint32_t>(d & 0xff) << 24;
}
constexpr uint32_t kIQ4W0 = pack_i8x4(-127, -104, -83, -65);
constexpr uint32_t kIQ4W1 = pack_i8x4(-49, -35, -22, -10);
constexpr uint32_t kIQ4W2 = pack_i8x4(1, 13, 25, 38);
constexpr uint32_t kIQ4W3 = pack_i8x4(53, 69, 89, 113);

PIPELM_HD int iq4nl_value(uint32_t q) {  // q in 0..15
    const uint32_t lo = hd::byte_perm(kIQ4W0, kIQ4W1, q & 7u);  // byte q & 7 of words 0-1 in byte 0
    const uint32_t hi = hd::byte_perm(kIQ4W2, kIQ4W3, q & 7u);
    return static_cast<int8_t>((q & 8u ? hi : lo) & 0xffu);
}

// Loads. Every block starts at an even offset of its row (all block sizes are even) and rows
// come from cudaMalloc (256-byte aligned) at multiples of the block size, so a field is as
// aligned as its offset within the block and the largest power of two dividing the block size.
PIPELM_HD float half_at(const uint8_t* p) { return hd::f16_to_f32(hd::u16_at(p)); }  // p 2-byte aligned
using hd::byte_of;
using hd::u32_at2;
using hd::u64_at2;
using hd::u64_at8;

// Scale and min of sub-block j (0..7) of a Q4_K / Q5_K block (ggml get_scale_min_k4).
PIPELM_HD void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// y[k] = value j0 + k (k < 8) of the block at b; j0 a multiple of 8 below block_values(T).
// Eight consecutive values always share one scale (sub-blocks hold 16 or more values).
template <GgmlType T>
PIPELM_HD void decode8(const uint8_t* __restrict__ b, int j0, float (&y)[8]) {
    static_assert(block_values(T) > 0, "decode8: not a block type");
    if constexpr (T == GgmlType::kQ8_0) {
        const float d = half_at(b);
        const hd::Words2 q = u64_at2(b + 2 + j0);
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k) y[k] = hd::mul(static_cast<float>(static_cast<int8_t>(byte_of(q, k))), d);
    } else if constexpr (T == GgmlType::kQ4_0 || T == GgmlType::kIQ4_NL) {
        const float d = half_at(b);
        const hd::Words2 q = u64_at2(b + 2 + (j0 & 15));  // values j and j + 16 share byte j
        const int shift = j0 & 16 ? 4 : 0;
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k) {
            const uint32_t n = (byte_of(q, k) >> shift) & 0xFu;
            if constexpr (T == GgmlType::kQ4_0)
                y[k] = hd::mul(static_cast<float>(static_cast<int>(n) - 8), d);
            else
                y[k] = hd::mul(d, static_cast<float>(iq4nl_value(n)));
        }
    } else if constexpr (T == GgmlType::kQ4_1) {
        const float d = half_at(b), m = half_at(b + 2);
        const hd::Words2 q = u64_at2(b + 4 + (j0 & 15));
        const int shift = j0 & 16 ? 4 : 0;
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k) {
            const uint32_t n = (byte_of(q, k) >> shift) & 0xFu;
            y[k] = hd::add(hd::mul(static_cast<float>(n), d), m);
        }
    } else if constexpr (T == GgmlType::kQ5_0 || T == GgmlType::kQ5_1) {
        constexpr bool kMin = T == GgmlType::kQ5_1;
        const float d = half_at(b);
        const uint32_t qh = u32_at2(b + (kMin ? 4 : 2)) >> j0;  // bit e: the fifth bit of value e
        const hd::Words2 q = u64_at2(b + (kMin ? 8 : 6) + (j0 & 15));
        const int shift = j0 & 16 ? 4 : 0;
        int n[8];
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k) n[k] = static_cast<int>(((byte_of(q, k) >> shift) & 0xFu) | ((qh >> k) & 1u) << 4);
        if constexpr (kMin) {
            const float m = half_at(b + 2);
PIPELM_UNROLL
            for (int k = 0; k < 8; ++k) y[k] = hd::add(hd::mul(static_cast<float>(n[k]), d), m);
        } else {
PIPELM_UNROLL
            for (int k = 0; k < 8; ++k) y[k] = hd::mul(static_cast<float>(n[k] - 16), d);
        }
    } else if constexpr (T == GgmlType::kQ4_K || T == GgmlType::kQ5_K) {
        constexpr bool kFive = T == GgmlType::kQ5_K;
        const int s = j0 >> 5, l0 = j0 & 31;  // sub-block of 32 values, first value in it
        int sc, mn;
        scale_min_k4(s, b + 4, &sc, &mn);
        const float d1 = hd::mul(half_at(b), static_cast<float>(sc));
        const float m1 = hd::mul(half_at(b + 2), static_cast<float>(mn));
        // Sub-blocks 2c and 2c + 1 are the low and high nibbles of the same 32 bytes.
        const hd::Words2 q = u64_at8(b + (kFive ? 48 : 16) + 32 * (s >> 1) + l0);
        const int shift = s & 1 ? 4 : 0;
        int n[8];
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k) n[k] = static_cast<int>((byte_of(q, k) >> shift) & 0xFu);
        if constexpr (kFive) {
            const hd::Words2 h = u64_at8(b + 16 + l0);  // bit s of qh[l]: the fifth bit of value 32 s + l
PIPELM_UNROLL
            for (int k = 0; k < 8; ++k) n[k] += (byte_of(h, k) >> s) & 1u ? 16 : 0;
        }
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k) y[k] = hd::sub(hd::mul(d1, static_cast<float>(n[k])), m1);
    } else if constexpr (T == GgmlType::kQ6_K) {
        const int hb = j0 >> 7, g = (j0 >> 5) & 3, l0 = j0 & 31;  // 128-value half, quarter of it, offset
        const hd::Words2 ql = u64_at2(b + 64 * hb + 32 * (g & 1) + l0);
        const hd::Words2 qh = u64_at2(b + 128 + 32 * hb + l0);
        const int sc = static_cast<int8_t>(b[192 + 8 * hb + (l0 >> 4) + 2 * g]);
        const float dsc = hd::mul(half_at(b + 208), static_cast<float>(sc));
        const int shift = g >= 2 ? 4 : 0;
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k) {
            const uint32_t lo = (byte_of(ql, k) >> shift) & 0xFu, hi = (byte_of(qh, k) >> (2 * g)) & 3u;
            const int n = static_cast<int>(lo | hi << 4);
            y[k] = hd::mul(dsc, static_cast<float>(n - 32));
        }
    } else {  // kIQ4_XS
        const int ib = j0 >> 5, j = j0 & 31;
        const uint32_t scales_h = hd::u16_at(b + 2);
        const uint32_t ls_lo = (b[4 + (ib >> 1)] >> (4 * (ib & 1))) & 0xFu, ls_hi = (scales_h >> (2 * ib)) & 3u;
        const int ls = static_cast<int>(ls_lo | ls_hi << 4);
        const float dl = hd::mul(half_at(b), static_cast<float>(ls - 32));
        const hd::Words2 q = u64_at8(b + 8 + 16 * ib + (j & 15));
        const int shift = j & 16 ? 4 : 0;
PIPELM_UNROLL
        for (int k = 0; k < 8; ++k)
            y[k] = hd::mul(dl, static_cast<float>(iq4nl_value((byte_of(q, k) >> shift) & 0xFu)));
    }
}

// Values [c0, c0 + 8) of a row of block type T (c0 a multiple of 8).
template <GgmlType T>
PIPELM_HD void decode8_at(const uint8_t* __restrict__ row, int64_t c0, float (&y)[8]) {
    constexpr int kValues = block_values(T), kBytes = block_bytes(T);
    decode8<T>(row + (c0 / kValues) * kBytes, static_cast<int>(c0 % kValues), y);
}

// ---- float weight types (f32, f16, bf16) ---------------------------------------------------

// Element c of a row of `type` (f32, f16, bf16), exactly as kernels::dequantize_row.
PIPELM_HD float load_element(GgmlType type, const uint8_t* row, int64_t c) {
    switch (type) {
        case GgmlType::kF32: return hd::f32_at(row + 4 * c);
        case GgmlType::kF16: return hd::f16_to_f32(hd::u16_at(row + 2 * c));
        case GgmlType::kBF16: return hd::bf16_to_f32(hd::u16_at(row + 2 * c));
        default: return hd::as_float(0x7fc00000u);  // a block type: NaN (callers route those to decode8)
    }
}

// The float weight types of the GEMV, as template arguments.
enum class FloatKind { kF32, kF16, kBF16 };

PIPELM_HD constexpr GgmlType type_of(FloatKind k) {
    return k == FloatKind::kF32 ? GgmlType::kF32 : k == FloatKind::kF16 ? GgmlType::kF16 : GgmlType::kBF16;
}

// Values per 16-byte load of a row of kind K: 4 (f32) or 8 (f16, bf16).
template <FloatKind K>
PIPELM_HD constexpr int values_per_16() { return K == FloatKind::kF32 ? 4 : 8; }

// 16 bytes of a row (four little-endian words) -> values_per_16<K>() floats, in element order.
template <FloatKind K>
PIPELM_HD void unpack16(const uint32_t (&v)[4], float* f) {
    PIPELM_UNROLL
    for (int k = 0; k < 4; ++k) {
        if constexpr (K == FloatKind::kF32) {
            f[k] = hd::as_float(v[k]);
        } else if constexpr (K == FloatKind::kF16) {
            f[2 * k] = hd::f16_to_f32(static_cast<uint16_t>(v[k] & 0xffffu));
            f[2 * k + 1] = hd::f16_to_f32(static_cast<uint16_t>(v[k] >> 16));
        } else {
            f[2 * k] = hd::as_float(v[k] << 16);
            f[2 * k + 1] = hd::as_float(v[k] & 0xffff0000u);
        }
    }
}

}  // namespace pipelm::kernels::cuda::detail
