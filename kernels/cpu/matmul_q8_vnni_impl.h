// ActQuant::kQ8 kernels with vpdpbusd (AVX-512-VNNI or AVX-VNNI) on weights repacked at load
// (the records of matmul_q8.h). Included by matmul_q8_avx512vnni.cc and matmul_q8_avxvnni.cc
// inside their target regions, after they define
//   PIPELM_VNNI_DP256(acc, u, s)  vpdpbusd on ymm (EVEX or VEX form),
//   PIPELM_VNNI_WIDE              1: the GEMM holds 2 rows per zmm; 0: 1 row per ymm,
//   PIPELM_VNNI_ENTRY             the name of the exported row-block function.
//
// Same integers, same float steps as the AVX2 kernels (kernels/matmul.h, kQ8 contract), hence the
// same bits. vpdpbusd multiplies unsigned bytes by signed bytes and adds 4 products into an int32
// lane, exactly. Every weight is fed as an unsigned code c = v + B: the records already hold
// c for Q4_1/Q5_1/Q4_K/Q5_K (B = 0) and Q4_0/Q5_0/Q6_K (B = 8, 16, 32); Q8_0 bytes get their
// sign bit flipped (B = 128) and IQ4_NL/IQ4_XS look up kvalues + 128 (B = 128). Per 32-value
// sub-block b (lane j of a group), with the int8 activations q:
//   X = Σ c q - B Σ q = Σ v q     (the accumulator starts at -B Σ q, from ActQ8::hs)
//   S_b = X (m = 1) | m_b X (Q4_K, Q5_K, IQ4_XS) | m_lo X_lo + m_hi X_hi (Q6_K: the
//         multipliers of elements 0..15 and 16..31; the accumulator restarts at the half)
// which is the exact integer S_b of the contract; then lane j = fma(mn_b, s_b, lane j) (types
// with a min) and lane j = fma(float(S_b), fl(f_b * d_b), lane j), group by group.
// The multiplications by m are done in float, and are exact: every product is an integer below
// 2^24 (Q4_K/Q5_K: |X| <= 32*31*127, m <= 63; IQ4_XS: |X| <= 32*127*127, |m| <= 32; Q6_K: |X_lo|,
// |X_hi| <= 16*32*127, |m| <= 128, and the sum is S_b, |S_b| < 2^24, so fma(X_hi, m_hi, X_lo m_lo)
// rounds to S_b exactly): float(S_b) with one multiply instead of vpmulld (2 uops, latency 10).
//
// Two kernels:
//   rec_tile (few tokens: decode) reads the records straight from memory, NR rows x NT tokens
//     in ymm (the decode GEMV is bound by memory or by the code unpacking, not by the dot
//     products);
//   gemm (prefill) unpacks each row's codes and factors once per token block and k block into a
//     panel that stays in L1, then register tiles of R row-vectors x NT tokens run through it
//     with one vpdpbusd per (row-vector, token, 32 bytes). WIDE: a zmm holds vector k of two
//     rows ([row a | row b]) against the same token's vector k broadcast to both halves, so
//     every lane is still one (row, token, sub-block) of the contract.
#pragma once

namespace pipelm::kernels::detail {
namespace {

PIPELM_AI __m256i vn_dp(__m256i acc, __m256i u, __m256i s) { return PIPELM_VNNI_DP256(acc, u, s); }

}  // namespace
}  // namespace pipelm::kernels::detail

#include "kernels/cpu/matmul_q8_vnni_records.h"

namespace pipelm::kernels::detail {
namespace {

// ------------------------------------------------------------------ decode: records straight
// How far ahead of each row stream to prefetch. Zen 5 (2 threads, 61-layer models, tg64 t/s in
// alternating rounds), Q8_0: 512 bytes 37.9-43.4, 1024 43.3-44.2, 1536 44.1-45.7, 2048 41.5-42.4,
// 3072 38.5-40.5; Q4_K_M: 512 50.1-52.0, 1536 54.9-69.5, 3072 58.4-67.4 (noisy). 512 was chosen on
// a Xeon (read loop 25 GB/s, where decode was at the roofline); a core that reads 30+ GB/s needs
// more bytes in flight per stream. Again on the Zen 5 guest once its memory had two states (2026-12-08,
// bench_matmul 1 token, 2 threads, GB/s q4_k / q6_k / q8_0): at a ~96 GB/s read loop 1536 bytes
// 72.8 / 74-81 / 76-79, 2048 76.4-80.2 / 82.5-85.6 / 80-83, 3072 84.5-86.4 / 90-91 / 78-79; at
// ~54 GB/s 2048 and 1536 equal within 1 %, 3072 4-6 % lower (q4_k, per GB/s of the loop). Q4_K_M
// tg64 in the fast state 1536 89.6-92.3, 2048 95.5-97.4, 3072 98.7-100.1 t/s; Q8_0 60.0 / 60.0 /
// 57.8. 2048: the fast state's gain without the slow state's loss.
constexpr int kVnPrefetchBytes = 2048;

// NR rows (row i at w + i*rs) x NT tokens t0.. of the interleaved activations; y[t*ldy + i*ys].
// Each (row, token) sums its 8 vectors in two int32 chains (even / odd k) that are added at the
// end of the group: the same exact integer, shorter dependency chains.
template <class T, int NR, int NT>
__attribute__((noinline)) void rec_tile(const uint8_t* w, size_t rs, int64_t ng, const ActQ8& a, int64_t t0, float* y,
                                        int64_t ldy, int64_t ys) {
    __m256 acc[NR][NT];
    const int8_t* xq[NT];
    static_for<NT>([&](auto t) AI_LAMBDA {
        xq[t] = a.qi + (t0 + t) * a.ldq;
        static_for<NR>([&](auto i) AI_LAMBDA { acc[i][t] = _mm256_setzero_ps(); });
    });
    for (int64_t g = 0; g < ng; ++g) {
        const uint8_t* wg = w + g * T::REC;
        static_for<NR>([&](auto i) AI_LAMBDA {
            for (int off = 0; off < T::REC; off += 64)
                _mm_prefetch(reinterpret_cast<const char*>(wg + i * rs + kVnPrefetchBytes + off), _MM_HINT_T0);
        });
        constexpr bool kSplit = T::MUL == Mul::kSplit;
        __m256i b0[NT], b1[NT];  // bias starts: whole block, or the two halves (kSplit)
        static_for<NT>([&](auto t) AI_LAMBDA {
            b0[t] = vn_bias<T::BIAS>(a, t0 + t, g, kSplit ? 1 : 0);
            if constexpr (kSplit) b1[t] = vn_bias<T::BIAS>(a, t0 + t, g, 2);
        });
        static_for<NR>([&](auto i) AI_LAMBDA {
            const uint8_t* rec = wg + i * rs;
            const RG G = T::prep(rec);
            __m256i v[8];
            T::codes(rec, v);
            static_for<NT>([&](auto t) AI_LAMBDA {
                const int8_t* x = xq[t] + 256 * g;
                __m256 S;  // float(S_b), exact
                if constexpr (kSplit) {
                    __m256i e = vn_dp(b0[t], v[0], load256(x)), o = vn_dp(_mm256_setzero_si256(), v[1], load256(x + 32));
                    e = vn_dp(e, v[2], load256(x + 64));
                    o = vn_dp(o, v[3], load256(x + 96));
                    __m256i e2 = vn_dp(b1[t], v[4], load256(x + 128)), o2 = vn_dp(_mm256_setzero_si256(), v[5], load256(x + 160));
                    e2 = vn_dp(e2, v[6], load256(x + 192));
                    o2 = vn_dp(o2, v[7], load256(x + 224));
                    S = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(e2, o2)), G.mhi,
                                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(e, o)), G.mlo));
                } else {
                    __m256i e = b0[t], o = _mm256_setzero_si256();
                    static_for<4>([&](auto k) AI_LAMBDA {
                        e = vn_dp(e, v[2 * k], load256(x + 64 * k));
                        o = vn_dp(o, v[2 * k + 1], load256(x + 64 * k + 32));
                    });
                    S = _mm256_cvtepi32_ps(_mm256_add_epi32(e, o));
                    if constexpr (T::MUL == Mul::kLane) S = _mm256_mul_ps(S, G.mlo);
                }
                const int64_t off = (t0 + t) * a.ldd + 8 * g;
                if constexpr (T::MIN) acc[i][t] = _mm256_fmadd_ps(G.mn, _mm256_loadu_ps(a.s + off), acc[i][t]);
                acc[i][t] = _mm256_fmadd_ps(S, _mm256_mul_ps(G.f, _mm256_loadu_ps(a.d + off)), acc[i][t]);
            });
        });
    }
    static_for<NR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA { y[t * ldy + i * ys] = hsum8(acc[i][t]); });
    });
}

// One row, tokens [t0, t1) in groups of NT (the rest 1 by 1).
template <class T, int NT>
void rec_row(const PackedWeight& p, int64_t r, const ActQ8& a, int64_t t0, int64_t t1, float* y, int64_t ldy) {
    int64_t t = t0;
    for (; t + NT <= t1; t += NT) rec_tile<T, 1, NT>(p.row(r), 0, p.ng, a, t, y + t * ldy + r, ldy, 1);
    for (; t < t1; ++t) rec_tile<T, 1, 1>(p.row(r), 0, p.ng, a, t, y + t * ldy + r, ldy, 1);
}

// 1 token: 4-row tiles whose rows come from 4 contiguous quarters of the range (4 long weight
// streams); 2 tokens: 2-row x 2-token tiles from 2 halves.
template <class T>
void rec_gemv(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    const int parts = n == 1 ? 4 : 2;
    const int64_t len = (r1 - r0) / parts;
    const size_t rs = static_cast<size_t>(len) * p.row_bytes;
    for (int64_t q = 0; q < len; ++q) {
        const uint8_t* w = p.row(r0 + q);
        if (n == 1)
            rec_tile<T, 4, 1>(w, rs, p.ng, a, 0, y + r0 + q, ldy, len);
        else
            rec_tile<T, 2, 2>(w, rs, p.ng, a, 0, y + r0 + q, ldy, len);
    }
    for (int64_t r = r0 + parts * len; r < r1; ++r) rec_row<T, 2>(p, r, a, 0, n, y, ldy);
}

// ------------------------------------------------------------------ prefill: panels + tiles
#if PIPELM_VNNI_WIDE
using VI = __m512i;
using VF = __m512;
constexpr int kRV = 2;  // rows per vector
PIPELM_AI VI v_zero() { return _mm512_setzero_si512(); }
PIPELM_AI VF vf_zero() { return _mm512_setzero_ps(); }
PIPELM_AI VI v_bcast(__m256i x) { return _mm512_broadcast_i64x4(x); }
PIPELM_AI VI v_bcast_mem(const void* p) { return _mm512_broadcast_i64x4(load256(p)); }
PIPELM_AI VF vf_bcast_mem(const float* p) { return _mm512_broadcast_f32x8(_mm256_loadu_ps(p)); }
PIPELM_AI VI v_dp(VI acc, VI u, VI s) { return _mm512_dpbusd_epi32(acc, u, s); }
PIPELM_AI VF vf_cvt(VI a) { return _mm512_cvtepi32_ps(a); }
PIPELM_AI VF vf_mul(VF a, VF b) { return _mm512_mul_ps(a, b); }
PIPELM_AI VF vf_fma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
PIPELM_AI VF vf_load(const float* p) { return _mm512_load_ps(p); }
PIPELM_AI void vf_store(float* p, VF v) { _mm512_store_ps(p, v); }
PIPELM_AI float vf_hsum(VF v, int h) { return hsum8(h == 0 ? _mm512_castps512_ps256(v) : _mm512_extractf32x8_ps(v, 1)); }
#else
using VI = __m256i;
using VF = __m256;
constexpr int kRV = 1;
PIPELM_AI VI v_zero() { return _mm256_setzero_si256(); }
PIPELM_AI VF vf_zero() { return _mm256_setzero_ps(); }
PIPELM_AI VI v_bcast(__m256i x) { return x; }
PIPELM_AI VI v_bcast_mem(const void* p) { return load256(p); }
PIPELM_AI VF vf_bcast_mem(const float* p) { return _mm256_loadu_ps(p); }
PIPELM_AI VI v_dp(VI acc, VI u, VI s) { return vn_dp(acc, u, s); }
PIPELM_AI VF vf_cvt(VI a) { return _mm256_cvtepi32_ps(a); }
PIPELM_AI VF vf_mul(VF a, VF b) { return _mm256_mul_ps(a, b); }
PIPELM_AI VF vf_fma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
PIPELM_AI VF vf_load(const float* p) { return _mm256_load_ps(p); }
PIPELM_AI void vf_store(float* p, VF v) { _mm256_store_ps(p, v); }
PIPELM_AI float vf_hsum(VF v, int) { return hsum8(v); }
#endif
constexpr int kVB = 32 * kRV;  // bytes per panel vector

// One group of kRV rows, unpacked: c[k] = vector k of the codes of each row (row h in bytes
// 32h..32h+31), f / mn / multipliers likewise by row. Missing rows are all zero.
struct alignas(64) PanelG {
    VI c[8];
    VF f, mn;
    VF mlo, mhi;
};

template <class T>
PIPELM_AI void unpack_group(const uint8_t* rec, int h, PanelG& P) {
    const RG G = T::prep(rec);
    __m256i v[8];
    T::codes(rec, v);
    uint8_t* base = reinterpret_cast<uint8_t*>(&P);
    for (int k = 0; k < 8; ++k) _mm256_store_si256(reinterpret_cast<__m256i*>(base + k * kVB + 32 * h), v[k]);
    _mm256_store_ps(reinterpret_cast<float*>(base + 8 * kVB + 32 * h), G.f);
    if constexpr (T::MIN) _mm256_store_ps(reinterpret_cast<float*>(base + 9 * kVB + 32 * h), G.mn);
    if constexpr (T::MUL != Mul::kOne) _mm256_store_ps(reinterpret_cast<float*>(base + 10 * kVB + 32 * h), G.mlo);
    if constexpr (T::MUL == Mul::kSplit) _mm256_store_ps(reinterpret_cast<float*>(base + 11 * kVB + 32 * h), G.mhi);
}

// Register tile: R row-vectors (panels pan[i], groups [0, ng) of the k block starting at group
// g0) x NT tokens t0... Accumulators start at +0 (first k block) or are reloaded from cacc
// [i][t][kRV * 8] (exact store / reload); after the last k block they are reduced into
// y[t*ldy + row], rows i*kRV + h < nrows, else stored back.
template <class T, int R, int NT>
__attribute__((noinline)) void gemm_tile(const PanelG* pan, int64_t pstride, int64_t ng, int64_t g0, const ActQ8& a,
                                         int64_t t0, float* cacc, int64_t cstride, bool first, bool last, float* y,
                                         int64_t ldy, int nrows) {
    constexpr bool kSplit = T::MUL == Mul::kSplit;
    VF acc[R][NT];
    static_for<R>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA {
            acc[i][t] = first ? vf_zero() : vf_load(cacc + (i * cstride + t) * 8 * kRV);
        });
    });
    for (int64_t gg = 0; gg < ng; ++gg) {
        const int64_t g = g0 + gg;
        VI X[R][NT];
        VF Slo[R][NT];  // kSplit: float(m_lo X_lo), exact
        VI start[NT];
        static_for<NT>([&](auto t) AI_LAMBDA {
            start[t] = v_bcast(vn_bias<T::BIAS>(a, t0 + t, g, kSplit ? 1 : 0));
        });
        static_for<R>([&](auto i) AI_LAMBDA {
            static_for<NT>([&](auto t) AI_LAMBDA { X[i][t] = start[t]; });
        });
        static_for<8>([&](auto k) AI_LAMBDA {
            if constexpr (kSplit && k == 4) {
                static_for<NT>([&](auto t) AI_LAMBDA { start[t] = v_bcast(vn_bias<T::BIAS>(a, t0 + t, g, 2)); });
                static_for<R>([&](auto i) AI_LAMBDA {
                    static_for<NT>([&](auto t) AI_LAMBDA {
                        Slo[i][t] = vf_mul(vf_cvt(X[i][t]), pan[i * pstride + gg].mlo);
                        X[i][t] = start[t];
                    });
                });
            }
            VI xk[NT];
            static_for<NT>([&](auto t) AI_LAMBDA { xk[t] = v_bcast_mem(a.qi + (t0 + t) * a.ldq + 256 * g + 32 * k); });
            static_for<R>([&](auto i) AI_LAMBDA {
                const VI wk = pan[i * pstride + gg].c[k];
                static_for<NT>([&](auto t) AI_LAMBDA { X[i][t] = v_dp(X[i][t], wk, xk[t]); });
            });
        });
        static_for<NT>([&](auto t) AI_LAMBDA {
            const int64_t off = (t0 + t) * a.ldd + 8 * g;
            const VF d = vf_bcast_mem(a.d + off);
            VF s;
            if constexpr (T::MIN) s = vf_bcast_mem(a.s + off);
            static_for<R>([&](auto i) AI_LAMBDA {
                const PanelG& P = pan[i * pstride + gg];
                VF S = vf_cvt(X[i][t]);  // float(S_b), exact
                if constexpr (kSplit)
                    S = vf_fma(S, P.mhi, Slo[i][t]);
                else if constexpr (T::MUL == Mul::kLane)
                    S = vf_mul(S, P.mlo);
                if constexpr (T::MIN) acc[i][t] = vf_fma(P.mn, s, acc[i][t]);
                acc[i][t] = vf_fma(S, vf_mul(P.f, d), acc[i][t]);
            });
        });
    }
    static_for<R>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA {
            if (!last) {
                vf_store(cacc + (i * cstride + t) * 8 * kRV, acc[i][t]);
                return;
            }
            for (int h = 0; h < kRV; ++h)
                if (i * kRV + h < nrows) y[t * ldy + i * kRV + h] = vf_hsum(acc[i][t], h);
        });
    });
}

// Register tile shape: R row-vectors x NT tokens. zmm: 4 x 4 (8 rows x 4 tokens: 16 int32
// accumulators in registers, the float ones spill and reload once per group); measured on the
// Xeon (1 thread, 512 tokens): 2 x 4 256 GFLOP/s, 3 x 4 300, 4 x 4 320-340 for Q8_0. ymm (16
// registers): 2 x 2, Q6_K (which keeps m_lo X_lo alive across the high half) 2 x 1.
template <class T>
struct TileShape {
    static constexpr int R = kRV == 2 ? 4 : 2;
    static constexpr int NT = kRV == 2 ? 4 : T::MUL == Mul::kSplit ? 1 : 2;
};

template <class T, int R>
void gemm_tokens(const PanelG* pan, int64_t pstride, int64_t ng, int64_t g0, const ActQ8& a, int64_t tb, int64_t te,
                 float* cacc, bool first, bool last, float* y, int64_t ldy, int nrows) {
    constexpr int NT = TileShape<T>::NT;
    const int64_t cstride = (te - tb + NT) / NT * NT;
    using Fn = void (*)(const PanelG*, int64_t, int64_t, int64_t, const ActQ8&, int64_t, float*, int64_t, bool, bool,
                        float*, int64_t, int);
    static_assert(NT <= 4);
    static constexpr Fn kTail[4] = {gemm_tile<T, R, 1>, gemm_tile<T, R, NT >= 2 ? 2 : 1>,
                                    gemm_tile<T, R, NT >= 3 ? 3 : 1>, gemm_tile<T, R, NT >= 4 ? 4 : 1>};
    for (int64_t t = tb; t < te;) {
        const int64_t nt = min64(NT, te - t);
        float* ca = cacc + (t - tb) * 8 * kRV;
        float* yt = y + t * ldy;
        if (nt == NT)
            gemm_tile<T, R, NT>(pan, pstride, ng, g0, a, t, ca, cstride, first, last, yt, ldy, nrows);
        else
            kTail[nt - 1](pan, pstride, ng, g0, a, t, ca, cstride, first, last, yt, ldy, nrows);
        t += nt;
    }
}

// Groups per k block: 8 (2048 values) keep a 4 x 8-group zmm panel (24 KiB) in L1 (measured at
// 4096 columns: 4, 8, 16, 32 within the noise).
constexpr int64_t kVnKGroups = 8;
// Activations of one token block, kept in L2 (the CPUs with AVX-512-VNNI have 1-2 MiB per core).
// Each token block unpacks the panels again: at 3840 columns (a down projection) 1 MiB gave
// +5-8 % over 384 KiB on the Xeon (2 MiB L2); 768 KiB leaves room on 1 MiB L2s.
constexpr int64_t kVnL2ActBytes = 768 << 10;

template <class T>
void vnni_gemm(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    constexpr int R = TileShape<T>::R;
    constexpr int NT = TileShape<T>::NT;
    constexpr int64_t RB = R * kRV;  // rows per row block
    const int64_t kg = min64(kVnKGroups, p.ng);
    const int64_t nc = min64(n, (kVnL2ActBytes / (a.ldq + 12 * a.ldd)) / NT * NT + NT);
    // scratch: panel [R][kg] then the accumulators [R][nc rounded up to NT][kRV * 8]
    const size_t pan_floats = static_cast<size_t>(R * kg) * sizeof(PanelG) / 4;
    const int64_t ncr = (nc + NT) / NT * NT;
    float* scratch = thread_scratch(1, pan_floats + static_cast<size_t>(R * ncr * 8 * kRV));
    PanelG* pan = reinterpret_cast<PanelG*>(scratch);
    float* cacc = scratch + pan_floats;
    for (int64_t tb = 0; tb < n; tb += nc) {
        const int64_t te = min64(n, tb + nc);
        for (int64_t rb = r0; rb < r1; rb += RB) {
            const int nrows = static_cast<int>(min64(RB, r1 - rb));
            const int nvec = (nrows + kRV - 1) / kRV;
            for (int64_t g0 = 0; g0 < p.ng; g0 += kg) {
                const int64_t ng = min64(kg, p.ng - g0);
                for (int i = 0; i < nvec; ++i) {
                    const int64_t rv = rb + i * kRV;  // first row of vector i
                    for (int64_t gg = 0; gg < ng; ++gg) {
                        PanelG& P = pan[i * kg + gg];
                        if (rv + kRV > r1) std::memset(static_cast<void*>(&P), 0, sizeof(PanelG));  // missing rows: zero
                        for (int h = 0; h < kRV && rv + h < r1; ++h)
                            unpack_group<T>(p.row(rv + h) + (g0 + gg) * T::REC, h, P);
                    }
                }
                const bool first = g0 == 0, last = g0 + ng == p.ng;
                if (nvec == R) {
                    gemm_tokens<T, R>(pan, kg, ng, g0, a, tb, te, cacc, first, last, y + rb, ldy, nrows);
                } else {  // the last rows of the range: one row-vector at a time (own accumulators each)
                    for (int i = 0; i < nvec; ++i)
                        gemm_tokens<T, 1>(pan + i * kg, kg, ng, g0, a, tb, te, cacc + i * ncr * 8 * kRV, first,
                                          last, y + rb + i * kRV, ldy, nrows - i * kRV);
                }
            }
        }
    }
}

// A few tokens (3 .. kVnFewMaxTokens, multi-sequence decode): NR-row x 4-token record tiles,
// rows from NR contiguous parts of the range (the rest of the tokens 1 by 1). Measured on the
// Xeon (1 thread, 512 MiB weight, GB/s of weight at 4 / 8 tokens): Q4_K 11.2-11.5 / 5.8 with
// 4 rows (2 rows: 8.8-9.5 / 4.8-5.2; the panel GEMM: 4.5-5.7 / 3.3-4.7). The zmm token pairs
// below beat the panel GEMM up to 32 tokens (Zen 5, 1 thread, 407 M Q8_0 model: pp24 487 vs 362
// t/s, pp32 482 vs 407, pp64 445 vs 477; tg16@32seq 408 vs 361), while their activation layout
// stays in L2.
constexpr int64_t kVnFewMaxTokens = PIPELM_VNNI_WIDE ? 32 : 8;
constexpr int64_t kVnPairBytesMax = 512 << 10;

#if PIPELM_VNNI_WIDE
// zmm for a few tokens: a register holds one row's sub-block sums of two tokens, [token 2p |
// token 2p + 1], against the row's code vector k broadcast to both halves. Every lane is still one
// (row, token, sub-block) of the contract with rec_tile's integers and float steps, so the bits
// are rec_tile's, with half its vpdpbusd. The
// activations of each token pair are laid out once per call (build_pairs) so that each (pair,
// vector) is one 64-byte load, a memory operand of vpdpbusd. Zen 5 (1 thread, 4096 columns, GB/s
// of weight at 4 / 8 tokens): Q8_0 28 / 15 with rec_tile.
constexpr int kPairVecs = 12;  // per (pair, group): 8 code vectors, 2 bias starts, d, s
PIPELM_AI bool few_fits(int64_t n, int64_t ng) { return n / 2 * ng * kPairVecs * 64 <= kVnPairBytesMax; }
PIPELM_AI __m512i zpair(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
PIPELM_AI __m512 zpair_ps(__m256 lo, __m256 hi) { return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1); }

// Pair q (tokens 2q, 2q + 1), group g at pb + (q * ng + g) * kPairVecs * 64: vectors k = 0..7 of
// the int8 activations, the -B sum q starts (whole block, or halves 1 and 2 for kSplit), d, s.
template <class T>
void build_pairs(const ActQ8& a, int64_t n_pairs, int64_t ng, uint8_t* pb) {
    constexpr bool kSplit = T::MUL == Mul::kSplit;
    for (int64_t q = 0; q < n_pairs; ++q) {
        const int64_t t = 2 * q;
        const int8_t* x0 = a.qi + t * a.ldq;
        const int8_t* x1 = x0 + a.ldq;
        for (int64_t g = 0; g < ng; ++g) {
            __m512i* v = reinterpret_cast<__m512i*>(pb + (q * ng + g) * kPairVecs * 64);
            for (int k = 0; k < 8; ++k) _mm512_store_si512(v + k, zpair(load256(x0 + 256 * g + 32 * k), load256(x1 + 256 * g + 32 * k)));
            _mm512_store_si512(v + 8, zpair(vn_bias<T::BIAS>(a, t, g, kSplit ? 1 : 0), vn_bias<T::BIAS>(a, t + 1, g, kSplit ? 1 : 0)));
            if constexpr (kSplit) _mm512_store_si512(v + 9, zpair(vn_bias<T::BIAS>(a, t, g, 2), vn_bias<T::BIAS>(a, t + 1, g, 2)));
            const int64_t o0 = t * a.ldd + 8 * g, o1 = o0 + a.ldd;
            _mm512_store_ps(reinterpret_cast<float*>(v + 10), zpair_ps(_mm256_loadu_ps(a.d + o0), _mm256_loadu_ps(a.d + o1)));
            if constexpr (T::MIN)
                _mm512_store_ps(reinterpret_cast<float*>(v + 11), zpair_ps(_mm256_loadu_ps(a.s + o0), _mm256_loadu_ps(a.s + o1)));
        }
    }
}

// The float steps of (row, pair) at the end of group g. S: float(S_b), or float(X) for kLane
// types (times m_b here, exact). Then lane j = fma(mn_b, s_b, lane j) (types with a min) and
// lane j = fma(float(S_b), fl(f_b * d_b), lane j). pvq: the pair's vectors of group g.
template <class T>
PIPELM_AI void pair_float_step(__m512 S, const RG& G, __m512 f, const __m512i* pvq, __m512& acc) {
    if constexpr (T::MUL == Mul::kLane) S = _mm512_mul_ps(S, _mm512_broadcast_f32x8(G.mlo));
    const float* fs = reinterpret_cast<const float*>(pvq + 10);
    if constexpr (T::MIN) acc = _mm512_fmadd_ps(_mm512_broadcast_f32x8(G.mn), _mm512_load_ps(fs + 16), acc);
    acc = _mm512_fmadd_ps(S, _mm512_mul_ps(f, _mm512_load_ps(fs)), acc);
}

// Group g of NR rows: prefetches each row's stream kVnPrefetchBytes ahead, points pv[q] at pair
// q's vectors of the group, returns row 0's record.
template <class T, int NR, int NP>
PIPELM_AI const uint8_t* pair_group(const uint8_t* w, size_t rs, int64_t g, const uint8_t* pb, int64_t pstride,
                                    const __m512i* (&pv)[NP]) {
    const uint8_t* wg = w + g * T::REC;
    static_for<NR>([&](auto i) AI_LAMBDA {
        for (int off = 0; off < T::REC; off += 64)
            _mm_prefetch(reinterpret_cast<const char*>(wg + i * rs + kVnPrefetchBytes + off), _MM_HINT_T0);
    });
    static_for<NP>([&](auto q) AI_LAMBDA { pv[q] = reinterpret_cast<const __m512i*>(pb + q * pstride + g * kPairVecs * 64); });
    return wg;
}

// y[(2q + h) * ldy + i * ys] = the sum of half h of acc[i][q].
template <int NR, int NP>
PIPELM_AI void pair_store(const __m512 (&acc)[NR][NP], float* y, int64_t ldy, int64_t ys) {
    static_for<NR>([&](auto i) AI_LAMBDA {
        static_for<NP>([&](auto q) AI_LAMBDA {
            y[(2 * q) * ldy + i * ys] = vf_hsum(acc[i][q], 0);
            y[(2 * q + 1) * ldy + i * ys] = vf_hsum(acc[i][q], 1);
        });
    });
}

// NR rows (row i at w + i*rs) x NP token pairs (pair q's groups at pb + q * pstride bytes);
// y[(2q + h) * ldy + i * ys].
template <class T, int NR, int NP>
__attribute__((noinline)) void rec_pairs(const uint8_t* w, size_t rs, int64_t ng, const uint8_t* pb, int64_t pstride,
                                         float* y, int64_t ldy, int64_t ys) {
    constexpr bool kSplit = T::MUL == Mul::kSplit;
    __m512 acc[NR][NP];
    static_for<NR>([&](auto i) AI_LAMBDA { static_for<NP>([&](auto q) AI_LAMBDA { acc[i][q] = _mm512_setzero_ps(); }); });
    for (int64_t g = 0; g < ng; ++g) {
        const __m512i* pv[NP];
        const uint8_t* wg = pair_group<T, NR, NP>(w, rs, g, pb, pstride, pv);
        static_for<NR>([&](auto i) AI_LAMBDA {
            const uint8_t* rec = wg + i * rs;
            const RG G = T::prep(rec);
            __m256i v[8];
            T::codes(rec, v);
            // Even and odd vectors in two int32 chains (as rec_tile): the same exact sum, half the
            // dependent vpdpbusd in a row.
            __m512i X[NP], O[NP], Xlo[NP];
            static_for<NP>([&](auto q) AI_LAMBDA {
                X[q] = _mm512_load_si512(pv[q] + 8);
                O[q] = _mm512_setzero_si512();
            });
            static_for<8>([&](auto k) AI_LAMBDA {
                if constexpr (kSplit && k == 4) {
                    static_for<NP>([&](auto q) AI_LAMBDA {
                        Xlo[q] = _mm512_add_epi32(X[q], O[q]);
                        X[q] = _mm512_load_si512(pv[q] + 9);
                        O[q] = _mm512_setzero_si512();
                    });
                }
                const __m512i wk = _mm512_broadcast_i64x4(v[k]);
                static_for<NP>([&](auto q) AI_LAMBDA {
                    if constexpr (k % 2 == 0)
                        X[q] = _mm512_dpbusd_epi32(X[q], wk, _mm512_load_si512(pv[q] + k));
                    else
                        O[q] = _mm512_dpbusd_epi32(O[q], wk, _mm512_load_si512(pv[q] + k));
                });
            });
            static_for<NP>([&](auto q) AI_LAMBDA { X[q] = _mm512_add_epi32(X[q], O[q]); });
            const __m512 f = _mm512_broadcast_f32x8(G.f);
            static_for<NP>([&](auto q) AI_LAMBDA {
                __m512 S;  // float(S_b), exact
                if constexpr (kSplit)
                    S = _mm512_fmadd_ps(_mm512_cvtepi32_ps(X[q]), _mm512_broadcast_f32x8(G.mhi),
                                        _mm512_mul_ps(_mm512_cvtepi32_ps(Xlo[q]), _mm512_broadcast_f32x8(G.mlo)));
                else
                    S = _mm512_cvtepi32_ps(X[q]);
                pair_float_step<T>(S, G, f, pv[q], acc[i][q]);
            });
        });
    }
    pair_store<NR, NP>(acc, y, ldy, ys);
}

// rec_pairs with the rows inner: vector k of pair q is loaded once into a register and fed to
// the NR rows, one 64-byte load per NR vpdpbusd (rec_pairs: one per vpdpbusd, the second row's
// from L1). For a pair layout that does not fit in L1 (4096 columns x 8 tokens: 48 KiB), whose
// loads then come from L2. With 8 or more (row, pair) chains in flight each sum is one int32
// chain; with fewer, even and odd k go to two chains added at the end (as rec_tile). Either way
// the exact integer of the contract, and the float steps of rec_pairs.
template <class T, int NR, int NP>
__attribute__((noinline)) void rec_pairs_ri(const uint8_t* w, size_t rs, int64_t ng, const uint8_t* pb, int64_t pstride,
                                            float* y, int64_t ldy, int64_t ys) {
    static_assert(T::MUL != Mul::kSplit, "Q6_K's two half sums per (row, pair) would not fit in registers");
    constexpr bool kTwoChains = NR * NP < 8;
    __m512 acc[NR][NP];
    static_for<NR>([&](auto i) AI_LAMBDA { static_for<NP>([&](auto q) AI_LAMBDA { acc[i][q] = _mm512_setzero_ps(); }); });
    for (int64_t g = 0; g < ng; ++g) {
        const __m512i* pv[NP];
        const uint8_t* wg = pair_group<T, NR, NP>(w, rs, g, pb, pstride, pv);
        RG G[NR];
        __m256i v[NR][8];
        static_for<NR>([&](auto i) AI_LAMBDA {
            G[i] = T::prep(wg + i * rs);
            T::codes(wg + i * rs, v[i]);
        });
        __m512i X[NR][NP], O[NR][NP];
        static_for<NP>([&](auto q) AI_LAMBDA {
            const __m512i b = _mm512_load_si512(pv[q] + 8);
            static_for<NR>([&](auto i) AI_LAMBDA {
                X[i][q] = b;
                if constexpr (kTwoChains) O[i][q] = _mm512_setzero_si512();
            });
        });
        static_for<8>([&](auto k) AI_LAMBDA {
            __m512i wk[NR];
            static_for<NR>([&](auto i) AI_LAMBDA { wk[i] = _mm512_broadcast_i64x4(v[i][k]); });
            static_for<NP>([&](auto q) AI_LAMBDA {
                __m512i x = _mm512_load_si512(pv[q] + k);
                // Opaque to the compiler: GCC would fold the load back into each vpdpbusd.
                asm("" : "+v"(x));
                static_for<NR>([&](auto i) AI_LAMBDA {
                    if constexpr (kTwoChains && k % 2 == 1)
                        O[i][q] = _mm512_dpbusd_epi32(O[i][q], wk[i], x);
                    else
                        X[i][q] = _mm512_dpbusd_epi32(X[i][q], wk[i], x);
                });
            });
        });
        static_for<NR>([&](auto i) AI_LAMBDA {
            const __m512 f = _mm512_broadcast_f32x8(G[i].f);
            static_for<NP>([&](auto q) AI_LAMBDA {
                if constexpr (kTwoChains) X[i][q] = _mm512_add_epi32(X[i][q], O[i][q]);
                pair_float_step<T>(_mm512_cvtepi32_ps(X[i][q]), G[i], f, pv[q], acc[i][q]);
            });
        });
    }
    pair_store<NR, NP>(acc, y, ldy, ys);
}

// NR-row x (up to 4 pairs) tiles, rows from NR contiguous parts of the range; an odd last
// token by rec_tile.
template <class T, int NR, bool kRowsInner>
void rec_few_parts(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n,
                   const uint8_t* pb, int64_t pstride) {
    const int64_t n_pairs = n / 2;
    const int64_t len = (r1 - r0) / NR;
    const size_t rs = static_cast<size_t>(len) * p.row_bytes;
    auto tile = [&](auto np, const uint8_t* w, int64_t q, float* yr) {
        constexpr int NP = decltype(np)::value;
        if constexpr (kRowsInner)
            rec_pairs_ri<T, NR, NP>(w, rs, p.ng, pb + q * pstride, pstride, yr + 2 * q * ldy, ldy, len);
        else
            rec_pairs<T, NR, NP>(w, rs, p.ng, pb + q * pstride, pstride, yr + 2 * q * ldy, ldy, len);
    };
    for (int64_t r = 0; r < len; ++r) {
        const uint8_t* w = p.row(r0 + r);
        float* yr = y + r0 + r;
        int64_t q = 0;
        for (; q + 4 <= n_pairs; q += 4) tile(std::integral_constant<int, 4>{}, w, q, yr);
        for (; q + 2 <= n_pairs; q += 2) tile(std::integral_constant<int, 2>{}, w, q, yr);
        for (; q < n_pairs; ++q) tile(std::integral_constant<int, 1>{}, w, q, yr);
        if (n % 2) rec_tile<T, NR, 1>(w, rs, p.ng, a, n - 1, yr + (n - 1) * ldy, ldy, len);
    }
    for (int64_t r = r0 + NR * len; r < r1; ++r) rec_row<T, 4>(p, r, a, 0, n, y, ldy);
}

// Up to 32 KiB of pair layout (L1 with room for the weight streams): 2-row tiles; beyond, 4-row
// tiles with the rows inner (rec_pairs_ri), except Q6_K, whose two half sums per (row, pair) do
// not fit 4 rows in 32 registers. Zen 5, 1 thread, 256 MiB of weight, GB/s of weight at 8 / 16
// tokens, 4096 columns: Q8_0 19.2-19.9 / 9.8-10.3 -> 26.4-28.5 / 13.4-14.4, Q4_K 11.5 / 4.6 ->
// 13.4-14.2 / 6.7-7.0; with 1024 columns (12 KiB at 8 tokens) 4 rows inner were 10 % slower for
// Q4_K and no faster for Q8_0 (the extra accumulators spill).
constexpr int64_t kVnPairL1Bytes = 32 << 10;

template <class T>
void rec_few(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    const int64_t n_pairs = n / 2, pstride = p.ng * kPairVecs * 64;
    uint8_t* pb = reinterpret_cast<uint8_t*>(thread_scratch(4, static_cast<size_t>(n_pairs * pstride) / 4));
    build_pairs<T>(a, n_pairs, p.ng, pb);
    if constexpr (T::MUL != Mul::kSplit) {
        if (n_pairs * pstride > kVnPairL1Bytes) return rec_few_parts<T, 4, true>(p, r0, r1, a, y, ldy, n, pb, pstride);
    }
    rec_few_parts<T, 2, false>(p, r0, r1, a, y, ldy, n, pb, pstride);
}
#else
PIPELM_AI bool few_fits(int64_t, int64_t) { return true; }
template <class T>
void rec_few(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    constexpr int NR = 2;  // (ymm-only targets have 16 registers)
    const int64_t len = (r1 - r0) / NR;
    const size_t rs = static_cast<size_t>(len) * p.row_bytes;
    for (int64_t q = 0; q < len; ++q) {
        const uint8_t* w = p.row(r0 + q);
        int64_t t = 0;
        for (; t + 4 <= n; t += 4) rec_tile<T, NR, 4>(w, rs, p.ng, a, t, y + t * ldy + r0 + q, ldy, len);
        for (; t < n; ++t) rec_tile<T, NR, 1>(w, rs, p.ng, a, t, y + t * ldy + r0 + q, ldy, len);
    }
    for (int64_t r = r0 + NR * len; r < r1; ++r) rec_row<T, 4>(p, r, a, 0, n, y, ldy);
}
#endif

template <class T>
void vnni_run(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy, int64_t n) {
    if (n <= 2)
        rec_gemv<T>(p, r0, r1, a, y, ldy, n);
    else if (n <= kVnFewMaxTokens && few_fits(n, p.ng))
        rec_few<T>(p, r0, r1, a, y, ldy, n);
    else
        vnni_gemm<T>(p, r0, r1, a, y, ldy, n);
}

}  // namespace

void PIPELM_VNNI_ENTRY(const PackedWeight& p, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                       int64_t n) {
    switch (p.type) {
        case GgmlType::kQ8_0: return vnni_run<VQ8_0>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_0: return vnni_run<VQ4_0>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_1: return vnni_run<VQ4_1>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_0: return vnni_run<VQ5_0>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_1: return vnni_run<VQ5_1>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kIQ4_NL: return vnni_run<VIQ4_NL>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ4_K: return vnni_run<VQ4_K>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ5_K: return vnni_run<VQ5_K>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kQ6_K: return vnni_run<VQ6_K>(p, r0, r1, a, y, ldy, n);
        case GgmlType::kIQ4_XS: return vnni_run<VIQ4_XS>(p, r0, r1, a, y, ldy, n);
        default: PIPELM_THROW(ErrorCode::kInternal, "vnni matmul: ", ggml_type_name(p.type), " is not packed");
    }
}

}  // namespace pipelm::kernels::detail
