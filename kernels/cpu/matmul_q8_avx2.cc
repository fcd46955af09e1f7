// ActQuant::kQ8 AVX2 kernels: int8 activations (per 32 values, matmul_q8.h) times the quantized
// weights with integer dot products, following the kQ8 contract of kernels/matmul.h bit for bit.
//
// Per 32-value weight block the decoder (struct E below) yields three int vectors in natural
// element order: u (unsigned maddubs operand: |v| for signed formats, v for unsigned ones), sg
// (signed formats: v, whose sign is moved onto the activations with vpsignb) and m (int16
// multipliers: ones, or the sub-block scale(s)). Per (row, token, block):
//   p = vpmaddubsw(u, sign(qx, v))   16 int16 pair sums, no saturation (|p| <= 2*128*127)
//   S = vpmaddwd(p, m)               8 int32 lanes, lane l = Σ m v q over elements 4l..4l+3
//   acc = fma(cvt(S), bcast(fl(f_b * d_b)), acc)
// The scale products fl(f_b * d_b) of a group of 8 blocks are one vmulps per (row, token,
// group). Types with a min add fma(mn[8], s[8], acc) once per group (before its blocks).
//
// One register tile (NR rows x NT tokens, NR*NT accumulators) serves both shapes:
//   GEMV (n <= 8): rows from 4 contiguous quarters of the range (4 sequential weight streams,
//     prefetched), token groups of <= 3 re-read the 4 rows from L1/L2;
//   GEMM: 4 consecutive rows x token groups of 3 over a token block whose int8 activations
//     stay in L2; the rows' weights stay in L1 across the token groups.
// Every (r, t) sees the same sequence whatever the tile, so results are batch-, thread- and
// split-invariant and equal the scalar reference (matmul_q8.cc).
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/matmul_q8.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "kernels/cpu/decode_avx2.h"

namespace pipelm::kernels::detail {
namespace {

#define AI_LAMBDA __attribute__((always_inline))

template <class F, int... I>
PIPELM_AI void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
PIPELM_AI void static_for(F&& f) {
    static_for_impl(f, std::make_integer_sequence<int, N>{});
}

PIPELM_AI int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)), as reduce8().
PIPELM_AI float hsum8(__m256 a) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

// ------------------------------------------------------------------ integer decoders
struct Blk {
    __m256i u, sg, m;
};

PIPELM_AI __m256i ones16() { return _mm256_set1_epi16(1); }
PIPELM_AI Blk signed_blk(__m256i v, __m256i m) { return {_mm256_abs_epi8(v), v, m}; }
PIPELM_AI Blk unsigned_blk(__m256i v, __m256i m) { return {v, v, m}; }
PIPELM_AI __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
PIPELM_AI __m256i iq4_lut(__m256i idx) {
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kIQ4Lut)));
    return _mm256_shuffle_epi8(lut, idx);
}

// fp16 fields at p + j*stride (j < nbg; zero beyond) as 8 floats.
// (Built in general registers: 16-bit stores reloaded as one vector would stall store forwarding.)
PIPELM_AI __m256 gather_fp16(const uint8_t* p, int stride, int nbg) {
    uint64_t h[2] = {0, 0};
    for (int j = 0; j < 8; ++j) {
        uint16_t v = 0;
        if (j < nbg) std::memcpy(&v, p + j * stride, 2);
        h[j >> 2] |= static_cast<uint64_t>(v) << (16 * (j & 3));
    }
    return _mm256_cvtph_ps(_mm_set_epi64x(static_cast<long long>(h[1]), static_cast<long long>(h[0])));
}

// Group context of the 32-value block types: f (and mn) for up to 8 blocks.
struct G32 {
    __m256 f;
};
struct G32Min {
    __m256 f, mn;
};

// Interface: QK, BYTES, SIGNED, MIN; G prep(group start, nbg); Blk block(group start, G, j).
// For QK = 32 a group is 8 blocks (stride BYTES), for QK = 256 one block of 8 sub-blocks.
struct EQ8_0 {
    static constexpr int QK = 32, BYTES = 34;
    static constexpr bool SIGNED = true, MIN = false;
    using G = G32;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) { return {gather_fp16(p, BYTES, nbg)}; }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        return signed_blk(load256(p + j * BYTES + 2), ones16());
    }
};

struct EQ4_0 {
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool SIGNED = true, MIN = false;
    using G = G32;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) { return {gather_fp16(p, BYTES, nbg)}; }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        return signed_blk(_mm256_sub_epi8(nibbles32(p + j * BYTES + 2), _mm256_set1_epi8(8)), ones16());
    }
};

struct EQ4_1 {
    static constexpr int QK = 32, BYTES = 20;
    static constexpr bool SIGNED = false, MIN = true;
    using G = G32Min;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) {
        return {gather_fp16(p, BYTES, nbg), gather_fp16(p + 2, BYTES, nbg)};
    }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        return unsigned_blk(nibbles32(p + j * BYTES + 4), ones16());
    }
};

struct EQ5_0 {
    static constexpr int QK = 32, BYTES = 22;
    static constexpr bool SIGNED = true, MIN = false;
    using G = G32;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) { return {gather_fp16(p, BYTES, nbg)}; }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        const uint8_t* b = p + j * BYTES;
        const __m256i q = _mm256_or_si256(nibbles32(b + 6), q5_high_bits(load_u32(b + 2)));
        return signed_blk(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), ones16());
    }
};

struct EQ5_1 {
    static constexpr int QK = 32, BYTES = 24;
    static constexpr bool SIGNED = false, MIN = true;
    using G = G32Min;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) {
        return {gather_fp16(p, BYTES, nbg), gather_fp16(p + 2, BYTES, nbg)};
    }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        const uint8_t* b = p + j * BYTES;
        return unsigned_blk(_mm256_or_si256(nibbles32(b + 8), q5_high_bits(load_u32(b + 4))), ones16());
    }
};

struct EIQ4_NL {
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool SIGNED = true, MIN = false;
    using G = G32;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) { return {gather_fp16(p, BYTES, nbg)}; }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        return signed_blk(iq4_lut(nibbles32(p + j * BYTES + 2)), ones16());
    }
};

// Q4_K / Q5_K: f = d (whole block), m = sc(j), mn_j = -(dmin * m(j)) (exact).
struct GK {
    __m256 f, mn;
    alignas(16) int16_t sc[8];
};
PIPELM_AI GK kquant_group(const uint8_t* b) {
    const uint32_t a0 = load_u32(b + 4), a1 = load_u32(b + 8), a2 = load_u32(b + 12);
    const uint32_t sc_lo = a0 & 0x3f3f3f3fu, m_lo = a1 & 0x3f3f3f3fu;
    const uint32_t sc_hi = (a2 & 0x0f0f0f0fu) | ((a0 >> 2) & 0x30303030u);
    const uint32_t m_hi = ((a2 >> 4) & 0x0f0f0f0fu) | ((a1 >> 2) & 0x30303030u);
    const __m128i sc = _mm_cvtsi64_si128(static_cast<long long>(sc_lo | (uint64_t)sc_hi << 32));
    const __m128i m = _mm_cvtsi64_si128(static_cast<long long>(m_lo | (uint64_t)m_hi << 32));
    GK g;
    g.f = bcast_fp16(b);
    const __m256 ndmin = _mm256_xor_ps(bcast_fp16(b + 2), _mm256_set1_ps(-0.0f));  // exact negation
    g.mn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m)), ndmin);
    _mm_store_si128(reinterpret_cast<__m128i*>(g.sc), _mm_cvtepu8_epi16(sc));
    return g;
}

struct EQ4_K {
    static constexpr int QK = 256, BYTES = 144;
    static constexpr bool SIGNED = false, MIN = true;
    using G = GK;
    static PIPELM_AI G prep(const uint8_t* p, int) { return kquant_group(p); }
    static PIPELM_AI Blk block(const uint8_t* p, const G& g, int j) {
        const __m256i q = load256(p + 16 + 32 * (j >> 1));
        const __m256i v = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(4 * (j & 1))), _mm256_set1_epi8(0x0F));
        return unsigned_blk(v, _mm256_set1_epi16(g.sc[j]));
    }
};

struct EQ5_K {
    static constexpr int QK = 256, BYTES = 176;
    static constexpr bool SIGNED = false, MIN = true;
    using G = GK;
    static PIPELM_AI G prep(const uint8_t* p, int) { return kquant_group(p); }
    static PIPELM_AI Blk block(const uint8_t* p, const G& g, int j) {
        const __m256i q = load256(p + 48 + 32 * (j >> 1));
        const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(4 * (j & 1))), _mm256_set1_epi8(0x0F));
        // bit j of qh[l] -> bit 4 (16-bit shifts only move bits across bytes where 0x10 drops them)
        const __m256i qh = _mm256_srl_epi16(load256(p + 16), _mm_cvtsi32_si128(j));
        const __m256i hb = _mm256_and_si256(_mm256_slli_epi16(qh, 4), _mm256_set1_epi8(0x10));
        return unsigned_blk(_mm256_or_si256(lo, hb), _mm256_set1_epi16(g.sc[j]));
    }
};

struct GQ6 {
    __m256 f;
};
struct EQ6_K {
    static constexpr int QK = 256, BYTES = 210;
    static constexpr bool SIGNED = true, MIN = false;
    using G = GQ6;
    static PIPELM_AI G prep(const uint8_t* p, int) { return {bcast_fp16(p + 208)}; }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        // Values 32j + l: low 4 bits from ql[64h + 32(g&1) + l] (nibble g/2), high 2 bits =
        // bits 2g..2g+1 of qh[32h + l]; minus 32. Multipliers: sc[2j] (l < 16), sc[2j+1].
        const int h = j >> 2, g = j & 3;
        const __m256i ql = load256(p + 64 * h + 32 * (g & 1));
        const __m256i qh = load256(p + 128 + 32 * h);
        const __m256i lo4 =
            _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (g >> 1))), _mm256_set1_epi8(0x0F));
        const __m256i hi2 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), 4),
                                             _mm256_set1_epi8(0x30));
        const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192 + 2 * j);
        const __m256i m = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(sc[0])), _mm_set1_epi16(sc[1]), 1);
        return signed_blk(_mm256_sub_epi8(_mm256_or_si256(lo4, hi2), _mm256_set1_epi8(32)), m);
    }
};

struct GXS {
    __m256 f;
    alignas(16) int16_t ls[8];  // ls - 32
};
struct EIQ4_XS {
    static constexpr int QK = 256, BYTES = 136;
    static constexpr bool SIGNED = true, MIN = false;
    using G = GXS;
    static PIPELM_AI G prep(const uint8_t* b, int) {
        const uint32_t sl = load_u32(b + 4);
        const uint32_t sh = static_cast<uint32_t>(b[2]) | static_cast<uint32_t>(b[3]) << 8;
        const __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(sl)),
                                                              _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                                            _mm256_set1_epi32(0x0F));
        const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(sh)),
                                                              _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                            _mm256_set1_epi32(3));
        const __m256i ls = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32));
        GXS g;
        g.f = bcast_fp16(b);
        const __m256i p16 = _mm256_packs_epi32(ls, ls);  // [0..3 0..3 | 4..7 4..7]
        _mm_store_si128(reinterpret_cast<__m128i*>(g.ls),
                        _mm256_castsi256_si128(_mm256_permute4x64_epi64(p16, 0x08)));  // qwords 0, 2
        return g;
    }
    static PIPELM_AI Blk block(const uint8_t* p, const G& g, int j) {
        return signed_blk(iq4_lut(nibbles32(p + 8 + 16 * j)), _mm256_set1_epi16(g.ls[j]));
    }
};

// ------------------------------------------------------------------ register tile
constexpr int kPrefetchBytes = 1024;

// NR rows (row i at w + i*rs) x NT tokens (t0 .. t0+NT-1 of `a`), all nb 32-value blocks;
// writes y[t*ldy + i*ys] (y points at token t0, row 0 of the tile).
template <class E, int NR, int NT>
__attribute__((noinline)) void tile(const uint8_t* w, size_t rs, const ActQ8& a, int64_t t0, float* y, int64_t ldy,
                                    int64_t ys) {
    constexpr int64_t GB = E::QK == 32 ? 8 * E::BYTES : E::BYTES;  // bytes per group of 8 blocks
    const int64_t nb = a.nb, ngroups = (nb + 7) / 8;
    const int8_t* qx[NT];
    const float* dx[NT];
    const float* sx[NT];
    __m256 acc[NR][NT];
    static_for<NT>([&](auto t) AI_LAMBDA {
        qx[t] = a.q + (t0 + t) * a.ldq;
        dx[t] = a.d + (t0 + t) * a.ldd;
        sx[t] = a.s + (t0 + t) * a.ldd;
        static_for<NR>([&](auto i) AI_LAMBDA { acc[i][t] = _mm256_setzero_ps(); });
    });
    for (int64_t g = 0; g < ngroups; ++g) {
        const int nbg = static_cast<int>(min64(8, nb - 8 * g));
        const uint8_t* wg = w + g * GB;
        static_for<NR>([&](auto i) AI_LAMBDA {
            for (int off = 0; off < GB; off += 64)
                _mm_prefetch(reinterpret_cast<const char*>(wg + i * rs + kPrefetchBytes + off), _MM_HINT_T0);
        });
        typename E::G gc[NR];
        alignas(32) float sc[NR][NT][8];
        static_for<NR>([&](auto i) AI_LAMBDA {
            gc[i] = E::prep(wg + i * rs, nbg);
            static_for<NT>([&](auto t) AI_LAMBDA {
                _mm256_store_ps(sc[i][t], _mm256_mul_ps(gc[i].f, _mm256_loadu_ps(dx[t] + 8 * g)));
                if constexpr (E::MIN) acc[i][t] = _mm256_fmadd_ps(gc[i].mn, _mm256_loadu_ps(sx[t] + 8 * g), acc[i][t]);
            });
        });
        for (int j = 0; j < nbg; ++j) {
            const int64_t k = (8 * g + j) * 32;
            static_for<NR>([&](auto i) AI_LAMBDA {
                const Blk B = E::block(wg + i * rs, gc[i], j);
                static_for<NT>([&](auto t) AI_LAMBDA {
                    const __m256i xq = load256(qx[t] + k);
                    const __m256i p = _mm256_maddubs_epi16(B.u, E::SIGNED ? _mm256_sign_epi8(xq, B.sg) : xq);
                    const __m256 S = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, B.m));
                    acc[i][t] = _mm256_fmadd_ps(S, _mm256_broadcast_ss(&sc[i][t][j]), acc[i][t]);
                });
            });
        }
    }
    static_for<NR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA { y[t * ldy + i * ys] = hsum8(acc[i][t]); });
    });
}

// Tokens [t0, t1) for NR rows, in groups of 3 (4 left -> 2 + 2).
template <class E, int NR>
void rows_tokens(const uint8_t* w, size_t rs, const ActQ8& a, int64_t t0, int64_t t1, float* y, int64_t ldy,
                 int64_t ys) {
    for (int64_t t = t0, nt; t < t1; t += nt) {
        nt = t1 - t == 4 ? 2 : min64(3, t1 - t);
        float* yt = y + t * ldy;
        if (nt == 3)
            tile<E, NR, 3>(w, rs, a, t, yt, ldy, ys);
        else if (nt == 2)
            tile<E, NR, 2>(w, rs, a, t, yt, ldy, ys);
        else
            tile<E, NR, 1>(w, rs, a, t, yt, ldy, ys);
    }
}

constexpr int64_t kGemvMaxTokens = 8;
constexpr int64_t kL2ActBytes = 192 << 10;  // int8 activations of one GEMM token block

template <class E>
void run(const WeightView& wv, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    const uint8_t* base = static_cast<const uint8_t*>(wv.data);
    const size_t rb = wv.row_bytes;
    if (n <= kGemvMaxTokens) {
        // 4 weight streams from the 4 quarters of the row range (see matmul_avx2.cc gemv()).
        const int64_t quarter = (r1 - r0) / 4;
        for (int64_t q = 0; q < quarter; ++q)
            rows_tokens<E, 4>(base + (r0 + q) * rb, quarter * rb, a, 0, n, y + r0 + q, ldy, quarter);
        for (int64_t r = r0 + 4 * quarter; r < r1; ++r) rows_tokens<E, 1>(base + r * rb, rb, a, 0, n, y + r, ldy, 1);
        return;
    }
    const int64_t nc = (kL2ActBytes / (a.ldq + 8 * a.ldd) + 2) / 3 * 3 + 3;  // tokens per block
    for (int64_t tb = 0; tb < n; tb += nc) {
        const int64_t te = min64(n, tb + nc);
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) rows_tokens<E, 4>(base + r * rb, rb, a, tb, te, y + r, ldy, 1);
        for (; r < r1; ++r) rows_tokens<E, 1>(base + r * rb, rb, a, tb, te, y + r, ldy, 1);
    }
}

}  // namespace

void quantize_act_q8_avx2(const float* x, int64_t K, int64_t ldd, int8_t* q, float* d, float* s) {
    const int64_t nb = K / 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + 32 * b;
        __m256 v[4];
        for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        const float db = _mm_cvtss_f32(h) / 127.f;
        int8_t* qb = q + 32 * b;
        if (db == 0.f) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb), _mm256_setzero_si256());
            d[b] = 0.f;
            s[b] = 0.f;
            continue;
        }
        const __m256 dv = _mm256_set1_ps(db), lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
        __m256i iv[4];
        for (int i = 0; i < 4; ++i) {
            const __m256 r = _mm256_round_ps(_mm256_div_ps(v[i], dv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            iv[i] = _mm256_cvtps_epi32(_mm256_min_ps(hi, _mm256_max_ps(lo, r)));
        }
        const __m256i sum4 = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum4), _mm256_extracti128_si256(sum4, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb),
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        d[b] = db;
        s[b] = db * static_cast<float>(_mm_cvtsi128_si32(s4));
    }
    for (int64_t b = nb; b < ldd; ++b) d[b] = s[b] = 0.f;
}

void matmul_q8_block_avx2(const WeightView& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                          int64_t n) {
    switch (w.type) {
        case GgmlType::kQ8_0: return run<EQ8_0>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_0: return run<EQ4_0>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_1: return run<EQ4_1>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_0: return run<EQ5_0>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_1: return run<EQ5_1>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kIQ4_NL: return run<EIQ4_NL>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_K: return run<EQ4_K>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_K: return run<EQ5_K>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kQ6_K: return run<EQ6_K>(w, r0, r1, a, y, ldy, n);
        case GgmlType::kIQ4_XS: return run<EIQ4_XS>(w, r0, r1, a, y, ldy, n);
        default: matmul_q8_block_scalar(w, r0, r1, a, y, ldy, n);  // unreachable: dispatch checks the type
    }
}

}  // namespace pipelm::kernels::detail

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
