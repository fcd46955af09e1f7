// ActQuant::kQ8 AVX2 kernels: int8 activations (per 32 values, matmul_q8.h) times the quantized
// weights with integer dot products, following the kQ8 contract of kernels/matmul.h bit for bit.
//
// Per 32-value weight block the decoder (struct E below) yields three int vectors in natural
// element order: u (unsigned maddubs operand: |v| for signed formats, v for unsigned ones), sg
// (signed formats: v, whose sign is moved onto the activations with vpsignb) and m (int16
// multipliers: ones, or the sub-block scale(s)). The exact block sums S_b (vpmaddubsw, int16
// sums that cannot overflow, vpmaddwd with m) land in lane j = b % 8 of a group vector, then
// one cvt + fma (and one min fma) per (row, token, group of 8 blocks).
//
// Two code paths, same integers and same float steps, hence the same bits:
//   n <= 2 (decode): gemv_tile decodes the weights in registers in natural order and reduces
//     the 8 per-block vectors of a group with a hadd tree; rows from 4 contiguous quarters of
//     the range (4 prefetched weight streams);
//   n >= 3: each row is decoded once into a panel whose 8 vectors per group are the dword
//     transpose of the 8 blocks (lane j = block j), and tile() runs it against the
//     activations stored in the same interleaved layout, up to 4 tokens per pass, over a token
//     block that stays in L2.
// Scalar reference: matmul_q8.cc.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/matmul_q8.h"
#include "runtime/base/error.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "kernels/cpu/decode_avx2.h"

namespace pipelm::kernels::detail {
namespace {

// ------------------------------------------------------------------ integer decoders
struct Blk {
    __m256i u, sg, m;
};

PIPELM_AI __m256i ones16() { return _mm256_set1_epi16(1); }
PIPELM_AI Blk signed_blk(__m256i v, __m256i m) { return {_mm256_abs_epi8(v), v, m}; }
PIPELM_AI Blk unsigned_blk(__m256i v, __m256i m) { return {v, v, m}; }
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
    static constexpr int ACC16 = 1;  // maddubs results summed in int16 (no overflow)
    static constexpr int QK = 32, BYTES = 34;
    static constexpr bool SIGNED = true, MIN = false;
    using G = G32;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) { return {gather_fp16(p, BYTES, nbg)}; }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        return signed_blk(load256(p + j * BYTES + 2), ones16());
    }
};

struct EQ4_0 {
    static constexpr int ACC16 = 8;  // maddubs results summed in int16 (no overflow)
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool SIGNED = true, MIN = false;
    using G = G32;
    static PIPELM_AI G prep(const uint8_t* p, int nbg) { return {gather_fp16(p, BYTES, nbg)}; }
    static PIPELM_AI Blk block(const uint8_t* p, const G&, int j) {
        return signed_blk(_mm256_sub_epi8(nibbles32(p + j * BYTES + 2), _mm256_set1_epi8(8)), ones16());
    }
};

struct EQ4_1 {
    static constexpr int ACC16 = 8;  // maddubs results summed in int16 (no overflow)
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
    static constexpr int ACC16 = 8;  // maddubs results summed in int16 (no overflow)
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
    static constexpr int ACC16 = 4;  // maddubs results summed in int16 (no overflow)
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
    static constexpr int ACC16 = 1;  // maddubs results summed in int16 (no overflow)
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
    __m128i sc, m;
    kquant_sc_m(b, sc, m);
    GK g;
    g.f = bcast_fp16(b);
    const __m256 ndmin = _mm256_xor_ps(bcast_fp16(b + 2), _mm256_set1_ps(-0.0f));  // exact negation
    g.mn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m)), ndmin);
    _mm_store_si128(reinterpret_cast<__m128i*>(g.sc), _mm_cvtepu8_epi16(sc));
    return g;
}

struct EQ4_K {
    static constexpr int ACC16 = 8;  // maddubs results summed in int16 (no overflow)
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
    static constexpr int ACC16 = 4;  // maddubs results summed in int16 (no overflow)
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
    static constexpr int ACC16 = 4;  // maddubs results summed in int16 (no overflow)
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
    static constexpr int ACC16 = 1;  // maddubs results summed in int16 (no overflow)
    static constexpr int QK = 256, BYTES = 136;
    static constexpr bool SIGNED = true, MIN = false;
    using G = GXS;
    static PIPELM_AI G prep(const uint8_t* b, int) {
        const __m256i ls = iq4xs_scales(b);
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

// ------------------------------------------------------------------ panel + tile
// A decoded row group (8 blocks), lanes = blocks: w[k] dword j = bytes 4k..4k+3 of block j
// (|v| for signed formats, v otherwise), ws[k] the same for v (signed formats), f/mn the block
// factors, mlo/mhi the int16 multipliers of elements 0..15 / 16..31 of each block (pairs per
// dword lane). Missing blocks of a partial group are all zero.
struct alignas(32) PG {
    __m256i w[8];
    __m256i ws[8];
    __m256 f, mn;
    __m256i mlo, mhi;
};

// dword transpose: out[k] dword j = in[j] dword k.
PIPELM_AI void transpose8(const __m256i* r, __m256i* out) {
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    out[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    out[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    out[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    out[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    out[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    out[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    out[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    out[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

template <class E>
PIPELM_AI void decode_group(const uint8_t* wg, int nbg, PG& out) {
    const typename E::G g = E::prep(wg, nbg);
    __m256i u[8], v[8];
    alignas(32) int16_t lo[16], hi[16];
    for (int j = 0; j < 8; ++j) {
        if (j < nbg) {
            const Blk b = E::block(wg, g, j);
            u[j] = b.u;
            v[j] = b.sg;
            lo[2 * j] = lo[2 * j + 1] = static_cast<int16_t>(_mm256_extract_epi16(b.m, 0));
            hi[2 * j] = hi[2 * j + 1] = static_cast<int16_t>(_mm256_extract_epi16(b.m, 8));
        } else {
            u[j] = v[j] = _mm256_setzero_si256();
            lo[2 * j] = lo[2 * j + 1] = hi[2 * j] = hi[2 * j + 1] = 0;
        }
    }
    transpose8(u, out.w);
    if constexpr (E::SIGNED) transpose8(v, out.ws);
    out.f = g.f;
    if constexpr (E::MIN) out.mn = g.mn;
    out.mlo = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
    out.mhi = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
}

// One decoded row (ngroups PGs) x NT tokens t0.. of `a` (interleaved activations); y[t*ldy].
// Per group: exact per-block integer dot products (lane j = Σ m v q over block j; int16 sums of
// ACC16 maddubs results cannot overflow), then the float steps of the contract. The weight
// vectors are loaded once per k and reused by the NT tokens.
template <class E, int NT>
__attribute__((noinline)) void tile(const PG* panel, int64_t ngroups, const ActQ8& a, int64_t t0, float* y,
                                    int64_t ldy) {
    __m256 acc[NT];
    const int8_t* xq[NT];
    static_for<NT>([&](auto t) AI_LAMBDA {
        acc[t] = _mm256_setzero_ps();
        xq[t] = a.qi + (t0 + t) * a.ldq;
    });
    for (int64_t g = 0; g < ngroups; ++g) {
        const PG& P = panel[g];
        __m256i s32[NT];
        static_for<NT>([&](auto t) AI_LAMBDA { s32[t] = _mm256_setzero_si256(); });
        for (int h = 0; h < 8; h += E::ACC16) {
            __m256i s16[NT];
            for (int k = h; k < h + E::ACC16; ++k) {
                const __m256i wk = P.w[k];
                static_for<NT>([&](auto t) AI_LAMBDA {
                    const __m256i xk = load256(xq[t] + 256 * g + 32 * k);
                    const __m256i p = _mm256_maddubs_epi16(wk, E::SIGNED ? _mm256_sign_epi8(xk, P.ws[k]) : xk);
                    s16[t] = (E::ACC16 == 1 || k == h) ? p : _mm256_add_epi16(s16[t], p);
                });
            }
            const __m256i m = h < 4 ? P.mlo : P.mhi;
            static_for<NT>([&](auto t) AI_LAMBDA { s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], m)); });
        }
        static_for<NT>([&](auto t) AI_LAMBDA {
            const int64_t o = (t0 + t) * a.ldd + 8 * g;
            if constexpr (E::MIN) acc[t] = _mm256_fmadd_ps(P.mn, _mm256_loadu_ps(a.s + o), acc[t]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]), _mm256_mul_ps(P.f, _mm256_loadu_ps(a.d + o)), acc[t]);
        });
    }
    static_for<NT>([&](auto t) AI_LAMBDA { y[t * ldy] = hsum8(acc[t]); });
}

template <class E>
void row_tokens(const PG* panel, int64_t ngroups, const ActQ8& a, int64_t t0, int64_t t1, float* y, int64_t ldy) {
    for (int64_t t = t0, nt; t < t1; t += nt) {
        nt = min64(4, t1 - t);
        float* yt = y + t * ldy;
        switch (nt) {
            case 4: tile<E, 4>(panel, ngroups, a, t, yt, ldy); break;
            case 3: tile<E, 3>(panel, ngroups, a, t, yt, ldy); break;
            case 2: tile<E, 2>(panel, ngroups, a, t, yt, ldy); break;
            default: tile<E, 1>(panel, ngroups, a, t, yt, ldy); break;
        }
    }
}

constexpr int kPrefetchBytes = 1024;
// Packed Q8_0: measured on the 2-core AMD VM (8 alternating runs, 2 threads, 256 MiB): 256 and
// 512 bytes ahead stream at 24-25 GB/s, 1024 at 21.
constexpr int kPackedPrefetchBytes = 512;
constexpr int64_t kGemvMaxTokens = 8;
constexpr int64_t kL2ActBytes = 160 << 10;  // int8 activations of one GEMM token block

// Decodes NRP rows (row i at w + i*rs) group by group into panels[i] (prefetching ahead in
// each row stream).
template <class E>
void decode_rows(const uint8_t* w, size_t rs, int nrp, int64_t nb, PG* panels, int64_t ngroups) {
    constexpr int64_t GB = E::QK == 32 ? 8 * E::BYTES : E::BYTES;  // bytes per group of 8 blocks
    for (int64_t g = 0; g < ngroups; ++g) {
        const int nbg = static_cast<int>(min64(8, nb - 8 * g));
        for (int i = 0; i < nrp; ++i) {
            const uint8_t* wg = w + i * rs + g * GB;
            for (int off = 0; off < GB; off += 64)
                _mm_prefetch(reinterpret_cast<const char*>(wg + kPrefetchBytes + off), _MM_HINT_T0);
            decode_group<E>(wg, nbg, panels[i * ngroups + g]);
        }
    }
}

// GEMV for few tokens: weights decoded in registers in natural order (no panel), NR rows
// (row i at w + i*rs) x NT tokens with natural activations; the 8 per-block int32 vectors of a
// group are reduced to one vector of block sums (lane j = block j) with a hadd tree: the same
// exact integers as the panel path, then the same float steps, hence the same bits.
template <class E, int NR, int NT>
__attribute__((noinline)) void gemv_tile(const uint8_t* w, size_t rs, const ActQ8& a, int64_t t0, float* y,
                                         int64_t ldy, int64_t ys) {
    constexpr int64_t GB = E::QK == 32 ? 8 * E::BYTES : E::BYTES;
    const int64_t nb = a.nb, ngroups = (nb + 7) / 8;
    __m256 acc[NR][NT];
    const int8_t* xq[NT];
    static_for<NT>([&](auto t) AI_LAMBDA {
        xq[t] = a.q + (t0 + t) * a.ldq;
        static_for<NR>([&](auto i) AI_LAMBDA { acc[i][t] = _mm256_setzero_ps(); });
    });
    for (int64_t g = 0; g < ngroups; ++g) {
        const int nbg = static_cast<int>(min64(8, nb - 8 * g));
        const uint8_t* wg = w + g * GB;
        static_for<NR>([&](auto i) AI_LAMBDA {
            for (int off = 0; off < GB; off += 64)
                _mm_prefetch(reinterpret_cast<const char*>(wg + i * rs + kPrefetchBytes + off), _MM_HINT_T0);
        });
        static_for<NR>([&](auto i) AI_LAMBDA {
            const uint8_t* wr = wg + i * rs;
            const typename E::G G = E::prep(wr, nbg);
            __m256i h[NT][4];
            static_for<4>([&](auto m) AI_LAMBDA {
                __m256i S[NT][2];
                static_for<2>([&](auto e) AI_LAMBDA {
                    const int j = 2 * m + e;
                    if (j < nbg) {
                        const Blk B = E::block(wr, G, j);
                        static_for<NT>([&](auto t) AI_LAMBDA {
                            const __m256i x = load256(xq[t] + 32 * (8 * g + j));
                            S[t][e] = _mm256_madd_epi16(
                                _mm256_maddubs_epi16(B.u, E::SIGNED ? _mm256_sign_epi8(x, B.sg) : x), B.m);
                        });
                    } else {
                        static_for<NT>([&](auto t) AI_LAMBDA { S[t][e] = _mm256_setzero_si256(); });
                    }
                });
                static_for<NT>([&](auto t) AI_LAMBDA { h[t][m] = _mm256_hadd_epi32(S[t][0], S[t][1]); });
            });
            static_for<NT>([&](auto t) AI_LAMBDA {
                const __m256i e0 = _mm256_hadd_epi32(h[t][0], h[t][1]), e1 = _mm256_hadd_epi32(h[t][2], h[t][3]);
                const __m256i S = _mm256_add_epi32(_mm256_permute2x128_si256(e0, e1, 0x20),
                                                   _mm256_permute2x128_si256(e0, e1, 0x31));
                const int64_t o = (t0 + t) * a.ldd + 8 * g;
                if constexpr (E::MIN) acc[i][t] = _mm256_fmadd_ps(G.mn, _mm256_loadu_ps(a.s + o), acc[i][t]);
                acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S), _mm256_mul_ps(G.f, _mm256_loadu_ps(a.d + o)),
                                            acc[i][t]);
            });
        });
    }
    static_for<NR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA { y[t * ldy + i * ys] = hsum8(acc[i][t]); });
    });
}

template <class E, int NR>
void gemv_rows(const uint8_t* w, size_t rs, const ActQ8& a, int64_t n, float* y, int64_t ldy, int64_t ys) {
    for (int64_t t = 0, nt; t < n; t += nt) {
        nt = min64(2, n - t);
        if (nt == 2)
            gemv_tile<E, NR, 2>(w, rs, a, t, y + t * ldy, ldy, ys);
        else
            gemv_tile<E, NR, 1>(w, rs, a, t, y + t * ldy, ldy, ys);
    }
}

constexpr int64_t kNaturalMaxTokens = 2;

template <class E>
void run(const WeightView& wv, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    const uint8_t* base = static_cast<const uint8_t*>(wv.data);
    const size_t rb = wv.row_bytes;
    const int64_t nb = a.nb, ngroups = (nb + 7) / 8;
    PG* panels = reinterpret_cast<PG*>(thread_scratch(1, static_cast<size_t>(4 * ngroups) * sizeof(PG) / 4));
    if (n <= kNaturalMaxTokens) {
        const int64_t quarter = (r1 - r0) / 4;
        for (int64_t q = 0; q < quarter; ++q)
            gemv_rows<E, 4>(base + (r0 + q) * rb, quarter * rb, a, n, y + r0 + q, ldy, quarter);
        for (int64_t r = r0 + 4 * quarter; r < r1; ++r) gemv_rows<E, 1>(base + r * rb, rb, a, n, y + r, ldy, 1);
        return;
    }
    if (n <= kGemvMaxTokens) {
        // 4 weight streams from the 4 quarters of the row range (see matmul_avx2.cc gemv()).
        const int64_t quarter = (r1 - r0) / 4;
        for (int64_t q = 0; q < quarter; ++q) {
            decode_rows<E>(base + (r0 + q) * rb, quarter * rb, 4, nb, panels, ngroups);
            for (int i = 0; i < 4; ++i) row_tokens<E>(panels + i * ngroups, ngroups, a, 0, n, y + r0 + q + i * quarter, ldy);
        }
        for (int64_t r = r0 + 4 * quarter; r < r1; ++r) {
            decode_rows<E>(base + r * rb, rb, 1, nb, panels, ngroups);
            row_tokens<E>(panels, ngroups, a, 0, n, y + r, ldy);
        }
        return;
    }
    const int64_t nc = (kL2ActBytes / (a.ldq + 8 * a.ldd) + 3) / 4 * 4 + 4;  // tokens per block
    for (int64_t tb = 0; tb < n; tb += nc) {
        const int64_t te = min64(n, tb + nc);
        for (int64_t r = r0; r < r1; r += 4) {
            const int nrp = static_cast<int>(min64(4, r1 - r));
            decode_rows<E>(base + r * rb, rb, nrp, nb, panels, ngroups);
            for (int i = 0; i < nrp; ++i) row_tokens<E>(panels + i * ngroups, ngroups, a, tb, te, y + r + i, ldy);
        }
    }
}

// ------------------------------------------------------------------ packed weights (repacked at load)
// Group decoders of the packed records (matmul_q8.h): REC bytes per record; prep() gives the
// per-lane float factors f (and min coefficients mn) and the int16 multiplier pairs of the madd
// for elements 0..15 (Mlo) and 16..31 (Mhi) of each sub-block; load() the 8 value vectors,
// lane j = sub-block j (signed values for SIGNED types, else unsigned). E is the file-layout
// decoder of the same type: the same integers; SIGNED, MIN and ACC16 as E's, except where a
// record's values are read as unsigned biased codes c = v + BIAS (then the block sums subtract
// BIAS * Σ m q from ActQ8::hs with the multiplier pairs Mb: the same exact integers).
struct PGK {
    __m256 f, mn;
    __m256i Mlo, Mhi;
    __m256i Mb;  // BIAS > 0: lane j = (multiplier of elements 0..15, of 16..31) as int16 pair
};
template <class E_>
struct PFlags {
    using E = E_;
    static constexpr bool SIGNED = E::SIGNED, MIN = E::MIN;
    static constexpr int ACC16 = E::ACC16, BIAS = 0;
};
// dword lanes x (|x| < 2^15) -> int16 pairs (x, x): the madd multipliers of one lane.
PIPELM_AI __m256i pairs16(__m256i x) {
    return _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(x, 16));
}
PIPELM_AI __m256 fp16x8(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
PIPELM_AI PGK lanes_d(const uint8_t* rec, bool biased = false) {
    return {fp16x8(rec), _mm256_setzero_ps(), ones16(), ones16(), biased ? ones16() : _mm256_setzero_si256()};
}
PIPELM_AI PGK lanes_dm(const uint8_t* rec) { return {fp16x8(rec), fp16x8(rec + 16), ones16(), ones16(), _mm256_setzero_si256()}; }
// Q4_K / Q5_K header: f = d, mn_j = -(dmin * m_j) (exact), multipliers sc_j.
PIPELM_AI PGK kquant_lanes(const uint8_t* rec) {
    const GK g = kquant_group(rec);
    const __m256i sc = pairs16(_mm256_cvtepi16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(g.sc))));
    return {g.f, g.mn, sc, sc, _mm256_setzero_si256()};
}
struct PQ8_0 : PFlags<EQ8_0> {
    static constexpr int REC = 272;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return lanes_d(rec); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) {
        for (int k = 0; k < 8; ++k) v[k] = load256(rec + 16 + 32 * k);
    }
};
// Biased codes c = v + 8 (0..15), read unsigned (see PGK); block multipliers 1.
struct PQ4_0 : PFlags<EQ4_0> {
    static constexpr bool SIGNED = false;
    static constexpr int BIAS = 8;  // ACC16 8: 8 pair sums <= 2*15*127 in int16
    static constexpr int REC = 144;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return lanes_d(rec, true); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) { nibble_vectors(rec + 16, v); }
};
struct PQ4_1 : PFlags<EQ4_1> {
    static constexpr int REC = 160;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return lanes_dm(rec); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) { nibble_vectors(rec + 32, v); }
};
// Biased codes c = v + 16 (0..31), read unsigned (see PGK); block multipliers 1.
struct PQ5_0 : PFlags<EQ5_0> {
    static constexpr bool SIGNED = false;
    static constexpr int ACC16 = 4, BIAS = 16;  // 4 pair sums <= 2*31*127 in int16
    static constexpr int REC = 176;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return lanes_d(rec, true); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 48, v);
        add_bit4(rec + 16, v);
    }
};
struct PQ5_1 : PFlags<EQ5_1> {
    static constexpr int REC = 192;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return lanes_dm(rec); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 64, v);
        add_bit4(rec + 32, v);
    }
};
struct PIQ4_NL : PFlags<EIQ4_NL> {
    static constexpr int REC = 144;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return lanes_d(rec); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 16, v);
        for (int k = 0; k < 8; ++k) v[k] = iq4_lut(v[k]);
    }
};
struct PQ4_K : PFlags<EQ4_K> {
    static constexpr int REC = 144;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return kquant_lanes(rec); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) { nibble_vectors(rec + 16, v); }
};
struct PQ5_K : PFlags<EQ5_K> {
    static constexpr int REC = 176;
    static PIPELM_AI PGK prep(const uint8_t* rec) { return kquant_lanes(rec); }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 48, v);
        add_bit4(rec + 16, v);
    }
};
// f = d; multipliers: int8 scale of elements 0..15 / 16..31 of sub-block j. The codes c = v + 32
// (0..63) are read unsigned: no abs / sign per vector; maddubs pair sums <= 2*63*127, two of
// them summed in int16.
struct PQ6_K {
    using E = EQ6_K;
    static constexpr bool SIGNED = false, MIN = false;
    static constexpr int ACC16 = 2, BIAS = 32;
    static constexpr int REC = 210;
    static PIPELM_AI PGK prep(const uint8_t* rec) {
        const __m256i lo = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(rec + 2)));
        const __m256i hi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(rec + 10)));
        const __m256i mb = _mm256_or_si256(_mm256_and_si256(lo, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(hi, 16));
        return {bcast_fp16(rec), _mm256_setzero_ps(), pairs16(lo), pairs16(hi), mb};
    }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) {
        q6k_codes(rec, v);  // the code c = v + 32
    }
};
struct PIQ4_XS : PFlags<EIQ4_XS> {  // f = d for every sub-block, multipliers ls - 32 of sub-block j in lane j
    static constexpr int REC = 136;
    static PIPELM_AI PGK prep(const uint8_t* rec) {
        const __m256i M = pairs16(iq4xs_scales(rec));
        return {bcast_fp16(rec), _mm256_setzero_ps(), M, M, _mm256_setzero_si256()};
    }
    static PIPELM_AI void load(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 8, v);
        for (int k = 0; k < 8; ++k) v[k] = iq4_lut(v[k]);
    }
};

// NR packed rows (row i at w + i*rs) x NT tokens of the interleaved activations. The vectors are
// already in lane order (lane j = sub-block j), so each feeds maddubs and madd directly and the
// block sums accumulate with one add: the integers and float steps of tile(), hence the same
// bits, without decode_group's transposes (GEMM) or the hadd tree (GEMV).
template <class P, int NR, int NT>
__attribute__((noinline)) void packed_tile(const uint8_t* w, size_t rs, int64_t ng, const ActQ8& a, int64_t t0,
                                           float* y, int64_t ldy, int64_t ys) {
    __m256 acc[NR][NT];
    const int8_t* xq[NT];
    static_for<NT>([&](auto t) AI_LAMBDA {
        xq[t] = a.qi + (t0 + t) * a.ldq;
        static_for<NR>([&](auto i) AI_LAMBDA { acc[i][t] = _mm256_setzero_ps(); });
    });
    for (int64_t g = 0; g < ng; ++g) {
        const uint8_t* wg = w + g * P::REC;
        static_for<NR>([&](auto i) AI_LAMBDA {
            for (int off = 0; off < P::REC; off += 64)
                _mm_prefetch(reinterpret_cast<const char*>(wg + i * rs + kPackedPrefetchBytes + off), _MM_HINT_T0);
        });
        static_for<NR>([&](auto i) AI_LAMBDA {
            const uint8_t* rec = wg + i * rs;
            const PGK G = P::prep(rec);
            __m256i v[8];
            P::load(rec, v);
            __m256i s32[NT];
            static_for<NT>([&](auto t) AI_LAMBDA { s32[t] = _mm256_setzero_si256(); });
            static_for<8 / P::ACC16>([&](auto hh) AI_LAMBDA {
                constexpr int h = hh * P::ACC16;
                __m256i s16[NT];
                static_for<P::ACC16>([&](auto kk) AI_LAMBDA {
                    constexpr int k = h + kk;
                    const __m256i u = P::SIGNED ? _mm256_abs_epi8(v[k]) : v[k];
                    static_for<NT>([&](auto t) AI_LAMBDA {
                        const __m256i xk = load256(xq[t] + 256 * g + 32 * k);
                        const __m256i p = _mm256_maddubs_epi16(u, P::SIGNED ? _mm256_sign_epi8(xk, v[k]) : xk);
                        s16[t] = kk == 0 ? p : _mm256_add_epi16(s16[t], p);
                    });
                });
                const __m256i M = h < 4 ? G.Mlo : G.Mhi;
                static_for<NT>([&](auto t) AI_LAMBDA { s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], M)); });
            });
            if constexpr (P::BIAS > 0) {  // Σ m v q = Σ m c q - BIAS Σ m q (BIAS a power of 2)
                static_assert((P::BIAS & (P::BIAS - 1)) == 0);
                constexpr int sh = __builtin_ctz(P::BIAS);
                static_for<NT>([&](auto t) AI_LAMBDA {
                    const __m256i hs = load256(a.hs + (t0 + t) * a.ldd + 8 * g);
                    s32[t] = _mm256_sub_epi32(s32[t], _mm256_slli_epi32(_mm256_madd_epi16(hs, G.Mb), sh));
                });
            }
            static_for<NT>([&](auto t) AI_LAMBDA {
                const int64_t o = (t0 + t) * a.ldd + 8 * g;
                if constexpr (P::MIN) acc[i][t] = _mm256_fmadd_ps(G.mn, _mm256_loadu_ps(a.s + o), acc[i][t]);
                acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]), _mm256_mul_ps(G.f, _mm256_loadu_ps(a.d + o)),
                                            acc[i][t]);
            });
        });
    }
    static_for<NR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA { y[t * ldy + i * ys] = hsum8(acc[i][t]); });
    });
}

// One row, tokens [t0, t1) in groups of NT (the rest 1 by 1).
template <class P, int NT>
void packed_row(const PackedWeight& p, int64_t r, const ActQ8& a, int64_t t0, int64_t t1, float* y, int64_t ldy) {
    int64_t t = t0;
    for (; t + NT <= t1; t += NT) packed_tile<P, 1, NT>(p.row(r), 0, p.ng, a, t, y + t * ldy + r, ldy, 1);
    for (; t < t1; ++t) packed_tile<P, 1, 1>(p.row(r), 0, p.ng, a, t, y + t * ldy + r, ldy, 1);
}

template <class P>
void run_packed(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    if (n <= 2) {
        // 1 token: 4-row tiles whose rows come from 4 contiguous quarters of the range (4 long
        // weight streams, as the unpacked GEMV); 2 tokens: 2-row x 2-token tiles from 2 halves.
        const int parts = n == 1 ? 4 : 2;
        const int64_t len = (r1 - r0) / parts;
        const size_t rs = static_cast<size_t>(len) * p.row_bytes;
        for (int64_t q = 0; q < len; ++q) {
            const uint8_t* w = p.row(r0 + q);
            if (n == 1)
                packed_tile<P, 4, 1>(w, rs, p.ng, a, 0, y + r0 + q, ldy, len);
            else
                packed_tile<P, 2, 2>(w, rs, p.ng, a, 0, y + r0 + q, ldy, len);
        }
        for (int64_t r = r0 + parts * len; r < r1; ++r) packed_row<P, 2>(p, r, a, 0, n, y, ldy);
        return;
    }
    if (n <= kGemvMaxTokens) {  // a few tokens: 4-token tiles straight from the records
        for (int64_t r = r0; r < r1; ++r) packed_row<P, 4>(p, r, a, 0, n, y, ldy);
        return;
    }
    // Prefill: token blocks whose activations stay in L2; each row is decoded once per block into
    // the panel form of tile() (|v|, v, factors), which the token groups then reuse from L1 (the
    // records' nibble unpacking and lookups would otherwise be redone for every 4 tokens).
    PG* panel = reinterpret_cast<PG*>(thread_scratch(1, static_cast<size_t>(p.ng) * sizeof(PG) / 4));
    const int64_t nc = (kL2ActBytes / (a.ldq + 8 * a.ldd) + 3) / 4 * 4 + 4;
    for (int64_t tb = 0; tb < n; tb += nc) {
        const int64_t te = min64(n, tb + nc);
        for (int64_t r = r0; r < r1; ++r) {
            const uint8_t* row = p.row(r);
            for (int64_t g = 0; g < p.ng; ++g) {
                const uint8_t* rec = row + g * P::REC;
                const PGK G = P::prep(rec);
                __m256i v[8];
                P::load(rec, v);
                PG& out = panel[g];
                for (int k = 0; k < 8; ++k) {  // the values in E's form (signed: v, not c = v + BIAS)
                    const __m256i vk = P::BIAS > 0 ? _mm256_sub_epi8(v[k], _mm256_set1_epi8(P::BIAS)) : v[k];
                    out.w[k] = P::E::SIGNED ? _mm256_abs_epi8(vk) : vk;
                    out.ws[k] = vk;
                }
                out.f = G.f;
                out.mn = G.mn;
                out.mlo = G.Mlo;
                out.mhi = G.Mhi;
            }
            row_tokens<typename P::E>(panel, p.ng, a, tb, te, y + r, ldy);
        }
    }
}

}  // namespace

void matmul_q8_packed_avx2(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                           int64_t n) {
    switch (p.type) {
        case GgmlType::kQ8_0: return run_packed<PQ8_0>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_0: return run_packed<PQ4_0>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_1: return run_packed<PQ4_1>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_0: return run_packed<PQ5_0>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_1: return run_packed<PQ5_1>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kIQ4_NL: return run_packed<PIQ4_NL>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_K: return run_packed<PQ4_K>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_K: return run_packed<PQ5_K>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ6_K: return run_packed<PQ6_K>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kIQ4_XS: return run_packed<PIQ4_XS>(p, r0, r1, a, y, ldy, n);
        default: PIPELM_THROW(ErrorCode::kInternal, "matmul_q8_packed_avx2: ", ggml_type_name(p.type), " is not packed");
    }
}

void quantize_act_q8_avx2(const float* x, int64_t K, int64_t ldd, int8_t* q, float* d, float* s, int32_t* hs) {
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
            hs[b] = 0;
            continue;
        }
        const __m256 dv = _mm256_set1_ps(db), lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
        __m256i iv[4];
        for (int i = 0; i < 4; ++i) {
            const __m256 r = _mm256_round_ps(_mm256_div_ps(v[i], dv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            iv[i] = _mm256_cvtps_epi32(_mm256_min_ps(hi, _mm256_max_ps(lo, r)));
        }
        // Half sums (elements 0..15: iv[0], iv[1]; 16..31: iv[2], iv[3]) in lanes 0 and 1.
        const __m256i lo8 = _mm256_add_epi32(iv[0], iv[1]), hi8 = _mm256_add_epi32(iv[2], iv[3]);
        __m256i hh = _mm256_hadd_epi32(lo8, hi8);  // [lo01 lo23 hi01 hi23 | lo45 lo67 hi45 hi67]
        hh = _mm256_hadd_epi32(hh, hh);             // [lo0-3 hi0-3 . . | lo4-7 hi4-7 . .]
        const __m128i h2 = _mm_add_epi32(_mm256_castsi256_si128(hh), _mm256_extracti128_si256(hh, 1));
        const int sum_lo = _mm_cvtsi128_si32(h2), sum_hi = _mm_extract_epi32(h2, 1);
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb),
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        d[b] = db;
        s[b] = db * static_cast<float>(sum_lo + sum_hi);
        hs[b] = static_cast<int32_t>((static_cast<uint32_t>(sum_hi) << 16) | (static_cast<uint32_t>(sum_lo) & 0xFFFFu));
    }
    for (int64_t b = nb; b < ldd; ++b) {
        d[b] = s[b] = 0.f;
        hs[b] = 0;
    }
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
