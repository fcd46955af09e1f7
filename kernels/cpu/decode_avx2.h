// AVX2 weight decoders: GGUF blocks -> 8-float vectors, in registers, bit-identical to
// dequantize_row (quant_cpu.cc), and the small primitives every x86 kernel file shares
// (static_for, min64, hsum8, load256, nibble_vectors, add_bit4). Included by each kernel file
// inside its target region (matmul_avx2.cc, matmul_avx512.cc, matmul_q8_avx2.cc,
// matmul_q8_avx512vnni.cc, matmul_q8_avxvnni.cc), so every copy is compiled for that file's
// instruction set; everything here has internal linkage.
//
// Decoder interface (struct D):
//   D::QK, D::BYTES    elements / bytes per block
//   D::SUBV            8-float vectors per part; a block has D::NPART = QK / (8 * SUBV) parts
//   D::Ctx D::prep(blk)                 per-block scales
//   D::part(blk, ctx, p, f)             calls f(j, w) for j = 0 .. SUBV-1 in increasing order,
//                                       w = elements 8 * (p * SUBV + j) .. +7 of the block
//   Float types (QK = 8, SUBV = 1) also have D::tail(p, n): the first n (< 8) values, rest 0.
// The GEMV interleaves the rows of a tile part by part, so that the FMA chains of all rows are
// in flight together (a whole 256-value block per row would serialize one chain at a time).
//
// Exactness: every vector holds exactly the floats dequantize_row produces, signed zeros
// included. Where ggml computes a*q + b (block scale a, small integer q, offset b) the product
// a*q is exact in binary32 (at most 11 + 6 + 6 significant bits), so one fused multiply-add
// rounds exactly like ggml's separate multiply and add. Where ggml subtracts an integer offset
// (Q4_0, Q5_0, Q6_K: d*(q - 8)) we subtract it in the integer domain first, as ggml does, so a
// zero quant keeps the sign of d. Scales multiplied by 2^-24 (see spread_top) stay exact.
//
// Speed notes (AMD Zen 3, AVX2): widening bytes with a memory-source vpmovzxbd is cheap, from a
// register (cross-lane) or through a stack buffer it is slow; so 4-bit formats whose nibbles
// map directly to values widen straight from the block, and formats that first build bytes in
// a register (lookup tables, 5th/6th bits) use the in-lane "top-byte spread".
#pragma once

namespace {

#define PIPELM_AI inline __attribute__((always_inline))
#define AI_LAMBDA __attribute__((always_inline))

// f(std::integral_constant<int, i>) for i = 0 .. N-1, fully unrolled at compile time (GCC's own
// unroller otherwise turns the row loop into a runtime loop with the accumulators in memory).
template <class F, int... I>
PIPELM_AI void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
PIPELM_AI void static_for(F&& f) {
    static_for_impl(f, std::make_integer_sequence<int, N>{});
}

PIPELM_AI int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Fixed horizontal reduction: ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)), as reduce8().
PIPELM_AI float hsum8(__m256 a) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  // a_i + a_{i+4}
    const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));                                // (0+2), (1+3)
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

PIPELM_AI __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// P_0..P_3 (32 bytes each at q) -> byte vectors k = P_k & 15, k + 4 = P_k >> 4.
PIPELM_AI void nibble_vectors(const uint8_t* q, __m256i* v) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int k = 0; k < 4; ++k) {
        const __m256i P = load256(q + 32 * k);
        v[k] = _mm256_and_si256(P, m4);
        v[k + 4] = _mm256_and_si256(_mm256_srli_epi16(P, 4), m4);
    }
}
// v[k] |= bit k of H's bytes, moved to bit 4 (16-bit shifts: a bit that crosses a byte lands
// outside 0x10).
PIPELM_AI void add_bit4(const uint8_t* h, __m256i* v) {
    const __m256i H = load256(h), b4 = _mm256_set1_epi8(0x10);
    static_for<8>([&](auto k) AI_LAMBDA {
        __m256i x;
        if constexpr (k < 4)
            x = _mm256_slli_epi16(H, 4 - k);
        else if constexpr (k == 4)
            x = H;
        else
            x = _mm256_srli_epi16(H, k - 4);
        v[k] = _mm256_or_si256(v[k], _mm256_and_si256(x, b4));
    });
}

PIPELM_AI uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// fp16 at p broadcast to 8 floats (exact).
PIPELM_AI __m256 bcast_fp16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(h)));
}

// 8 bytes at p widened to 8 int32 lanes. The memory-source forms (vpmovzxbd/vpmovsxbd ymm, m64)
// are much cheaper on the CPUs we measured than widening from a register (cross-lane shuffle).
PIPELM_AI __m256i u8x8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
PIPELM_AI __m256i i8x8(const void* p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
PIPELM_AI __m256 cvt(__m256i v) { return _mm256_cvtepi32_ps(v); }

// 16 packed bytes -> 32 nibbles as bytes: [low nibbles (elements 0..15) | high nibbles (16..31)].
PIPELM_AI __m256i nibbles32(const uint8_t* p) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// "Top-byte spread": int8 values k[] -> int32 lanes holding k << 24. cvt of such a lane is
// exactly k * 2^24, and multiplying by (scale * 2^-24) (exact: a power-of-two step that never
// underflows for fp16-derived scales) gives exactly k * scale, the value ggml computes. Costs one
// in-lane byte shuffle per 8 values after a 128-bit broadcast: no widening through the stack or
// cross-lane vpmovsx from a register, which are slow on the CPUs we measured.
PIPELM_AI __m256 spread_top(__m256i k2 /* 16 bytes in both lanes */, int j) {  // k[8j .. 8j+7] * 2^24
    const __m256i c = _mm256_add_epi8(
        _mm256_setr_epi8(-128, -128, -128, 0, -128, -128, -128, 1, -128, -128, -128, 2, -128, -128, -128, 3,  //
                         -128, -128, -128, 4, -128, -128, -128, 5, -128, -128, -128, 6, -128, -128, -128, 7),
        _mm256_set1_epi8(static_cast<char>(8 * j)));  // -128 + 8j keeps bit 7 set: still "zero"
    return _mm256_cvtepi32_ps(_mm256_shuffle_epi8(k2, c));
}
// f(j, k[8j..8j+7] * 2^24) for j = 0..3 from 32 int8 values in a ymm ([0..15 | 16..31]).
template <class F>
PIPELM_AI void spread32(__m256i y, F&& f) {
    const __m256i lo = _mm256_permute4x64_epi64(y, 0x44), hi = _mm256_permute4x64_epi64(y, 0xEE);
    f(0, spread_top(lo, 0));
    f(1, spread_top(lo, 1));
    f(2, spread_top(hi, 0));
    f(3, spread_top(hi, 1));
}
// Same from two xmm halves (values 0..15, 16..31).
template <class F>
PIPELM_AI void spread16x2(__m128i a, __m128i b, F&& f) {
    const __m256i lo = _mm256_broadcastsi128_si256(a), hi = _mm256_broadcastsi128_si256(b);
    f(0, spread_top(lo, 0));
    f(1, spread_top(lo, 1));
    f(2, spread_top(hi, 0));
    f(3, spread_top(hi, 1));
}
PIPELM_AI __m256 scale_2m24(__m256 s) { return _mm256_mul_ps(s, _mm256_set1_ps(5.9604644775390625e-08f)); }  // * 2^-24

// Q5_0/Q5_1 high bits: byte j of the result = 0x10 if bit j of qh is set (j = 0..31, in the
// element order of nibbles32).
PIPELM_AI __m256i q5_high_bits(uint32_t qh) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
    const __m256i sel = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)), spread), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(sel, bit), _mm256_set1_epi8(0x10));
}

alignas(16) constexpr int8_t kIQ4Lut[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                             1,    13,   25,  38,  53,  69,  89,  113};

// Every decoder: block(b, f) = prep + all parts, f(v, w) for v = 0 .. QK/8-1.
template <class D, class F>
PIPELM_AI void decode_block(const uint8_t* b, F&& f) {
    const typename D::Ctx c = D::prep(b);
    for (int p = 0; p < D::NPART; ++p) D::part(b, c, p, [&](int j, __m256 w) { f(p * D::SUBV + j, w); });
}

struct NoCtx {};

// ---------------------------------------------------------------- float types (QK = 8)
struct DecF32 {
    static constexpr int QK = 8, BYTES = 32, SUBV = 1, NPART = 1;
    using Ctx = NoCtx;
    static PIPELM_AI Ctx prep(const uint8_t*) { return {}; }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx&, int, F&& f) {
        f(0, _mm256_loadu_ps(reinterpret_cast<const float*>(b)));
    }
    static PIPELM_AI __m256 tail(const uint8_t* b, int n) {
        float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        std::memcpy(t, b, static_cast<size_t>(n) * 4);
        return _mm256_loadu_ps(t);
    }
};

struct DecF16 {
    static constexpr int QK = 8, BYTES = 16, SUBV = 1, NPART = 1;
    using Ctx = NoCtx;
    static PIPELM_AI Ctx prep(const uint8_t*) { return {}; }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx&, int, F&& f) {
        f(0, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b))));
    }
    static PIPELM_AI __m256 tail(const uint8_t* b, int n) {
        uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        std::memcpy(t, b, static_cast<size_t>(n) * 2);
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
    }
};

struct DecBF16 {
    static constexpr int QK = 8, BYTES = 16, SUBV = 1, NPART = 1;
    using Ctx = NoCtx;
    static PIPELM_AI Ctx prep(const uint8_t*) { return {}; }
    static PIPELM_AI __m256 conv(const void* p) {  // bf16 -> f32: the 16 bits become the high half
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx&, int, F&& f) {
        f(0, conv(b));
    }
    static PIPELM_AI __m256 tail(const uint8_t* b, int n) {
        uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        std::memcpy(t, b, static_cast<size_t>(n) * 2);
        return conv(t);
    }
};

// ---------------------------------------------------------------- 32-element blocks
struct Scale {
    __m256 d;
};
struct ScaleMin {
    __m256 d, m;
};

struct DecQ8_0 {  // y = q * d
    static constexpr int QK = 32, BYTES = 34, SUBV = 4, NPART = 1;
    using Ctx = Scale;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return {bcast_fp16(b)}; }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& c, int, F&& f) {
        for (int v = 0; v < 4; ++v) f(v, _mm256_mul_ps(cvt(i8x8(b + 2 + 8 * v)), c.d));
    }
};

struct DecQ4_0 {  // y = (q - 8) * d
    static constexpr int QK = 32, BYTES = 18, SUBV = 4, NPART = 1;
    using Ctx = Scale;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return {bcast_fp16(b)}; }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& c, int, F&& f) {
        const __m256i a = u8x8(b + 2), e = u8x8(b + 10), m4 = _mm256_set1_epi32(0x0F), o8 = _mm256_set1_epi32(8);
        f(0, _mm256_mul_ps(cvt(_mm256_sub_epi32(_mm256_and_si256(a, m4), o8)), c.d));
        f(1, _mm256_mul_ps(cvt(_mm256_sub_epi32(_mm256_and_si256(e, m4), o8)), c.d));
        f(2, _mm256_mul_ps(cvt(_mm256_sub_epi32(_mm256_srli_epi32(a, 4), o8)), c.d));
        f(3, _mm256_mul_ps(cvt(_mm256_sub_epi32(_mm256_srli_epi32(e, 4), o8)), c.d));
    }
};

struct DecQ4_1 {  // y = q * d + m
    static constexpr int QK = 32, BYTES = 20, SUBV = 4, NPART = 1;
    using Ctx = ScaleMin;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return {bcast_fp16(b), bcast_fp16(b + 2)}; }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& c, int, F&& f) {
        const __m256i a = u8x8(b + 4), e = u8x8(b + 12), m4 = _mm256_set1_epi32(0x0F);
        f(0, _mm256_fmadd_ps(cvt(_mm256_and_si256(a, m4)), c.d, c.m));
        f(1, _mm256_fmadd_ps(cvt(_mm256_and_si256(e, m4)), c.d, c.m));
        f(2, _mm256_fmadd_ps(cvt(_mm256_srli_epi32(a, 4)), c.d, c.m));
        f(3, _mm256_fmadd_ps(cvt(_mm256_srli_epi32(e, 4)), c.d, c.m));
    }
};

struct DecIQ4_NL {  // y = d * kvalues[q]
    static constexpr int QK = 32, BYTES = 18, SUBV = 4, NPART = 1;
    using Ctx = Scale;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return {scale_2m24(bcast_fp16(b))}; }  // d * 2^-24
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& c, int, F&& f) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
        const __m128i lut = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Lut)), m4 = _mm_set1_epi8(0x0F);
        spread16x2(_mm_shuffle_epi8(lut, _mm_and_si128(raw, m4)),
                   _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(raw, 4), m4)),
                   [&](int j, __m256 k) { f(j, _mm256_mul_ps(k, c.d)); });
    }
};

struct DecQ5_0 {  // y = (q - 16) * d
    static constexpr int QK = 32, BYTES = 22, SUBV = 4, NPART = 1;
    using Ctx = Scale;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return {scale_2m24(bcast_fp16(b))}; }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& c, int, F&& f) {
        const __m256i q = _mm256_or_si256(nibbles32(b + 6), q5_high_bits(load_u32(b + 2)));
        spread32(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), [&](int j, __m256 k) { f(j, _mm256_mul_ps(k, c.d)); });
    }
};

struct DecQ5_1 {  // y = q * d + m
    static constexpr int QK = 32, BYTES = 24, SUBV = 4, NPART = 1;
    using Ctx = ScaleMin;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return {scale_2m24(bcast_fp16(b)), bcast_fp16(b + 2)}; }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& c, int, F&& f) {
        const __m256i q = _mm256_or_si256(nibbles32(b + 8), q5_high_bits(load_u32(b + 4)));
        spread32(q, [&](int j, __m256 k) { f(j, _mm256_fmadd_ps(k, c.d, c.m)); });
    }
};

// ---------------------------------------------------------------- 256-element blocks
// Q4_K/Q5_K scales: d1[s] = d * sc(s), nm1[s] = -(dmin * m(s)) for sub-block s (exact products),
// kept in memory and broadcast per sub-block (a load, no shuffle).
struct KScales {
    alignas(32) float d1[8];
    alignas(32) float nm1[8];
};

// The 6-bit scales (sc) and mins (m) of a Q4_K/Q5_K block's 8 sub-blocks, bytes 0..7 of each.
PIPELM_AI void kquant_sc_m(const uint8_t* blk, __m128i& sc, __m128i& m) {
    const uint32_t a0 = load_u32(blk + 4), a1 = load_u32(blk + 8), a2 = load_u32(blk + 12);
    const uint32_t sc_lo = a0 & 0x3f3f3f3fu, m_lo = a1 & 0x3f3f3f3fu;
    const uint32_t sc_hi = (a2 & 0x0f0f0f0fu) | ((a0 >> 2) & 0x30303030u);
    const uint32_t m_hi = ((a2 >> 4) & 0x0f0f0f0fu) | ((a1 >> 2) & 0x30303030u);
    sc = _mm_cvtsi64_si128(static_cast<long long>(sc_lo | (uint64_t)sc_hi << 32));
    m = _mm_cvtsi64_si128(static_cast<long long>(m_lo | (uint64_t)m_hi << 32));
}

PIPELM_AI KScales kquant_scales(const uint8_t* blk, bool times_2m24) {
    __m128i sc, m;
    kquant_sc_m(blk, sc, m);
    KScales k;
    const __m256 d1 = _mm256_mul_ps(cvt(_mm256_cvtepu8_epi32(sc)), bcast_fp16(blk));
    _mm256_store_ps(k.d1, times_2m24 ? scale_2m24(d1) : d1);
    const __m256 ndmin = _mm256_xor_ps(bcast_fp16(blk + 2), _mm256_set1_ps(-0.0f));  // exact negation
    _mm256_store_ps(k.nm1, _mm256_mul_ps(cvt(_mm256_cvtepu8_epi32(m)), ndmin));
    return k;
}

struct DecQ4_K {  // sub-block s: y = q * d1[s] - m1[s]; part = 64 values (sub-blocks 2p, 2p+1)
    static constexpr int QK = 256, BYTES = 144, SUBV = 8, NPART = 4;
    using Ctx = KScales;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return kquant_scales(b, false); }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& k, int p, F&& f) {
        const uint8_t* q = b + 16 + 32 * p;
        const __m256i m4 = _mm256_set1_epi32(0x0F);
        const __m256i a0 = u8x8(q), a1 = u8x8(q + 8), a2 = u8x8(q + 16), a3 = u8x8(q + 24);
        const __m256 dl = _mm256_broadcast_ss(k.d1 + 2 * p), ml = _mm256_broadcast_ss(k.nm1 + 2 * p);
        f(0, _mm256_fmadd_ps(cvt(_mm256_and_si256(a0, m4)), dl, ml));
        f(1, _mm256_fmadd_ps(cvt(_mm256_and_si256(a1, m4)), dl, ml));
        f(2, _mm256_fmadd_ps(cvt(_mm256_and_si256(a2, m4)), dl, ml));
        f(3, _mm256_fmadd_ps(cvt(_mm256_and_si256(a3, m4)), dl, ml));
        const __m256 dh = _mm256_broadcast_ss(k.d1 + 2 * p + 1), mh = _mm256_broadcast_ss(k.nm1 + 2 * p + 1);
        f(4, _mm256_fmadd_ps(cvt(_mm256_srli_epi32(a0, 4)), dh, mh));
        f(5, _mm256_fmadd_ps(cvt(_mm256_srli_epi32(a1, 4)), dh, mh));
        f(6, _mm256_fmadd_ps(cvt(_mm256_srli_epi32(a2, 4)), dh, mh));
        f(7, _mm256_fmadd_ps(cvt(_mm256_srli_epi32(a3, 4)), dh, mh));
    }
};

struct DecQ5_K {  // sub-block s: y = (q + 16 * bit_s(qh)) * d1[s] - m1[s]; part = 64 values
    static constexpr int QK = 256, BYTES = 176, SUBV = 8, NPART = 4;
    using Ctx = KScales;
    static PIPELM_AI Ctx prep(const uint8_t* b) { return kquant_scales(b, true); }  // d1 * 2^-24
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& k, int p, F&& f) {
        const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10);
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 48 + 32 * p));
        // Bits 2p / 2p+1 of qh[l] moved to bit 4 of each byte (the 16-bit shifts move bits
        // across bytes only into positions that the 0x10 mask drops).
        const __m256i qh = _mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16)),
                                            _mm_cvtsi32_si128(2 * p));
        const __m256i h_lo = _mm256_and_si256(_mm256_slli_epi16(qh, 4), b4);
        const __m256i h_hi = _mm256_and_si256(_mm256_slli_epi16(qh, 3), b4);
        const __m256 dl = _mm256_broadcast_ss(k.d1 + 2 * p), ml = _mm256_broadcast_ss(k.nm1 + 2 * p);
        spread32(_mm256_or_si256(_mm256_and_si256(raw, m4), h_lo),
                 [&](int j, __m256 v) { f(j, _mm256_fmadd_ps(v, dl, ml)); });
        const __m256 dh = _mm256_broadcast_ss(k.d1 + 2 * p + 1), mh = _mm256_broadcast_ss(k.nm1 + 2 * p + 1);
        spread32(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), h_hi),
                 [&](int j, __m256 v) { f(4 + j, _mm256_fmadd_ps(v, dh, mh)); });
    }
};

struct Q6Scales {
    alignas(32) float ds[16];  // d * sc[i] * 2^-24 for the 16-value sub-block i (exact)
};

struct DecQ6_K {  // 16-value sub-block i: y = (q - 32) * (d * sc[i]); part = 32 values (4h + g)
    static constexpr int QK = 256, BYTES = 210, SUBV = 4, NPART = 8;
    using Ctx = Q6Scales;
    static PIPELM_AI Ctx prep(const uint8_t* b) {
        Q6Scales k;
        const __m256 d = bcast_fp16(b + 208);
        _mm256_store_ps(k.ds, scale_2m24(_mm256_mul_ps(d, cvt(i8x8(b + 192)))));
        _mm256_store_ps(k.ds + 8, scale_2m24(_mm256_mul_ps(d, cvt(i8x8(b + 200)))));
        return k;
    }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& k, int p, F&& f) {
        // Values 128h + 32g + l (l < 32): low 4 bits from ql[64h + 32(g&1) + l] (nibble g/2),
        // high 2 bits = bits 2g..2g+1 of qh[32h + l], moved to bits 4..5; minus 32 as int8.
        const int h = p >> 2, g = p & 3;
        const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32 * (g & 1)));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
        const __m256i lo4 =
            _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (g >> 1))), _mm256_set1_epi8(0x0F));
        const __m256i hi2 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), 4),
                                             _mm256_set1_epi8(0x30));
        const __m256 s0 = _mm256_broadcast_ss(k.ds + 2 * p), s1 = _mm256_broadcast_ss(k.ds + 2 * p + 1);
        spread32(_mm256_sub_epi8(_mm256_or_si256(lo4, hi2), _mm256_set1_epi8(32)),
                 [&](int j, __m256 v) { f(j, _mm256_mul_ps(v, j < 2 ? s0 : s1)); });
    }
};

// IQ4_XS block b: the 8 sub-block scales ls - 32 (6 bits: low 4 in scales_l, high 2 in
// scales_h), one per int32 lane.
PIPELM_AI __m256i iq4xs_scales(const uint8_t* b) {
    const uint32_t sl = load_u32(b + 4);
    const uint32_t sh = static_cast<uint32_t>(b[2]) | static_cast<uint32_t>(b[3]) << 8;
    const __m256i lo = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(sl)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
        _mm256_set1_epi32(0x0F));
    const __m256i hi = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(sh)), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
        _mm256_set1_epi32(3));
    return _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32));
}

struct DecIQ4_XS {  // sub-block ib: y = kvalues[q] * (d * (ls - 32)); part = sub-block
    static constexpr int QK = 256, BYTES = 136, SUBV = 4, NPART = 8;
    struct Ctx {
        alignas(32) float dl[8];
    };
    static PIPELM_AI Ctx prep(const uint8_t* b) {
        const __m256i ls = iq4xs_scales(b);
        Ctx c;
        _mm256_store_ps(c.dl, scale_2m24(_mm256_mul_ps(bcast_fp16(b), cvt(ls))));  // dl * 2^-24
        return c;
    }
    template <class F>
    static PIPELM_AI void part(const uint8_t* b, const Ctx& c, int p, F&& f) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 8 + 16 * p));
        const __m128i lut = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Lut)), m4 = _mm_set1_epi8(0x0F);
        const __m256 s = _mm256_broadcast_ss(c.dl + p);
        spread16x2(_mm_shuffle_epi8(lut, _mm_and_si128(raw, m4)),
                   _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(raw, 4), m4)),
                   [&](int j, __m256 k) { f(j, _mm256_mul_ps(k, s)); });
    }
};

// Prefetches `bytes` bytes of each of `mr` rows (row i at p + i*rb) into L2.
PIPELM_AI void prefetch_rows(const uint8_t* p, size_t rb, int mr, int64_t bytes) {
    for (int i = 0; i < mr; ++i)
        for (int64_t off = 0; off < bytes; off += 64)
            _mm_prefetch(reinterpret_cast<const char*>(p + i * rb + off), _MM_HINT_T1);
}

// The 6-bit codes of a packed Q6_K record (matmul_q8.h; 32 sub-block values per vector): low
// nibbles at +82, bit pairs 2i..2i+1 of the 64 bytes at +18 moved to bits 4..5. The codes are
// unsigned, c = v + 32.
PIPELM_AI void q6k_codes(const uint8_t* rec, __m256i* v) {
    nibble_vectors(rec + 82, v);
    const __m256i b45 = _mm256_set1_epi8(0x30);
    static_for<2>([&](auto a) AI_LAMBDA {
        const __m256i H = load256(rec + 18 + 32 * a);
        static_for<4>([&](auto i) AI_LAMBDA {  // bits 2i..2i+1 -> bits 4..5
            __m256i x;
            if constexpr (i < 2)
                x = _mm256_slli_epi16(H, 4 - 2 * i);
            else if constexpr (i == 2)
                x = H;
            else
                x = _mm256_srli_epi16(H, 2);
            constexpr int k = 4 * a + i;
            v[k] = _mm256_or_si256(v[k], _mm256_and_si256(x, b45));
        });
    });
}

// f(D{}) with the decoder D of `type` (every file compiles its kernels for it through this one
// table); false for a type without a decoder (Matrix::prepare refuses those).
template <class F>
PIPELM_AI bool with_decoder(pipelm::GgmlType type, F&& f) {
    using T = pipelm::GgmlType;
    switch (type) {
        case T::kF32: f(DecF32{}); return true;
        case T::kF16: f(DecF16{}); return true;
        case T::kBF16: f(DecBF16{}); return true;
        case T::kQ8_0: f(DecQ8_0{}); return true;
        case T::kQ4_0: f(DecQ4_0{}); return true;
        case T::kQ4_1: f(DecQ4_1{}); return true;
        case T::kQ5_0: f(DecQ5_0{}); return true;
        case T::kQ5_1: f(DecQ5_1{}); return true;
        case T::kIQ4_NL: f(DecIQ4_NL{}); return true;
        case T::kQ4_K: f(DecQ4_K{}); return true;
        case T::kQ5_K: f(DecQ5_K{}); return true;
        case T::kQ6_K: f(DecQ6_K{}); return true;
        case T::kIQ4_XS: f(DecIQ4_XS{}); return true;
        default: return false;
    }
}

}  // namespace
