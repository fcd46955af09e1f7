// CPU attention (causal GQA) and SwiGLU of kernels/ops.h, with a vectorized exp.
//
// Two variants chosen at run time by detail::active_isa(): AVX2+FMA+F16C (functions with a
// target attribute; the build does not use -march) and a portable scalar one. Both perform the
// same IEEE operations in the same order (every multiply-add is an explicit fused FMA, and this
// file is compiled with -ffp-contract=off), so they give the same bits; the tests check that.
//
// Determinism: each output (token t, head h) is computed by one fixed sequence of operations
// that depends only on t's q row, t's K/V rows and n_kv[t] — not on the batch, on the other
// heads in a tile, on the block or tile sizes, or on the threads.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/base/fp16.h"

#define PIPELM_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace pipelm::kernels {
namespace {

// ---- exp -----------------------------------------------------------------------------------
// exp(x) in float, max error ~1 ulp on [-87, 88] (measured by ops_sampler_test: <= 2 ulp):
//   x is clamped to [-105, 89] (below: the result rounds to +0; above: +inf); NaN stays NaN;
//   n = nearbyint(x * log2(e));  r = (x - n*ln2_hi) - n*ln2_lo   (two FMAs; |r| <= ~0.347);
//   p = e^r by its degree-7 Taylor polynomial, Horner with FMAs (truncation < 6e-9 relative);
//   exp(x) = (p * 2^n1) * 2^n2 with n1 = n >> 1, n2 = n - n1 (both factors normal floats, so
//   subnormal results and overflow to +inf round once, in the last multiply).
constexpr float kExpLo = -105.f, kExpHi = 89.f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;           // 16 significant bits: n * kLn2Hi is exact
constexpr float kLn2Lo = 1.428606820309417232e-6f;     // ln 2 - kLn2Hi
constexpr float kC[8] = {1.f, 1.f, 1.f / 2, 1.f / 6, 1.f / 24, 1.f / 120, 1.f / 720, 1.f / 5040};

float pow2i(int32_t e) {  // 2^e for e in [-126, 127]
    return bits_to_f32(static_cast<uint32_t>(e + 127) << 23);
}

// Scalar reference of exp8_avx2 (identical bits, lane by lane).
float exp_scalar(float x) {
    if (std::isnan(x)) return x;
    x = kExpLo > x ? kExpLo : x;  // _mm256_max_ps(lo, x)
    x = kExpHi < x ? kExpHi : x;  // _mm256_min_ps(hi, x)
    const float n = std::nearbyint(x * kLog2e);
    float r = std::fma(n, -kLn2Hi, x);
    r = std::fma(n, -kLn2Lo, r);
    float p = kC[7];
    for (int i = 6; i >= 0; --i) p = std::fma(p, r, kC[i]);
    const int32_t ni = static_cast<int32_t>(n);
    const int32_t n1 = ni >> 1, n2 = ni - n1;
    return (p * pow2i(n1)) * pow2i(n2);
}

PIPELM_AVX2 inline __m256 exp8_avx2(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(kExpLo), x);  // NaN in x passes through (second operand)
    x = _mm256_min_ps(_mm256_set1_ps(kExpHi), x);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
    __m256 p = _mm256_set1_ps(kC[7]);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[6]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[5]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[4]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[3]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[2]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[1]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[0]));
    const __m256i ni = _mm256_cvtps_epi32(n);  // exact: n is integral
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// ---- SwiGLU --------------------------------------------------------------------------------
// out = g / (1 + exp(-g)) * u, in this order (exp as above). |g| large: exp(-g) = +inf gives
// g / inf = -0, exp(-g) = 0 gives g * u: finite for finite inputs (unless g*u overflows).
float silu_mul_scalar(float g, float u) { return g / (1.0f + exp_scalar(-g)) * u; }

PIPELM_AVX2 void swiglu_row_avx2(const float* g, const float* u, float* out, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = exp8_avx2(_mm256_xor_ps(gv, sign));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) out[i] = silu_mul_scalar(g[i], u[i]);
}

void swiglu_row_scalar(const float* g, const float* u, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = silu_mul_scalar(g[i], u[i]);
}

// ---- attention -----------------------------------------------------------------------------
// One work item: token t, KV head g, query heads [h0, h0 + nh) of that group (all of them
// unless a small batch is split to keep every thread busy). For each head h, with n = n_kv[t]:
//   s[h][j] = (reduce_lanes(lanes) [+ tail]) * scale,   j < n, where lane l accumulates
//             q[c] * K[j][c] for c ≡ l (mod 8), c < hd8 = hd & ~7, c increasing, by FMA from +0,
//             reduce_lanes = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) (as _mm256_hadd_ps),
//             tail: d = fma(q[c], K[j][c], d) for c = hd8 .. hd-1;
//   m = max_j s[h][j];  p[j] = exp(s[h][j] - m)   (FP32);
//   sum = Σ p[j] in double: lane l (of 8) sums p[j] for j ≡ l (mod 8), j < n8 = n & ~7, in j
//         order; then ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then + p[j], j >= n8;
//   out[h][c] = acc * (float)(1 / sum), acc = fma(p[j], V[j][c], acc) for j = 0 .. n-1 from +0.
// K and V rows are the exact dequantized values (f16 → f32 and q8_0 → f32 are exact).

// The fixed reduction of the eight FMA lanes of a score.
float reduce_lanes(const float* l) { return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); }

// Rows of K or V as floats: f32 caches are read in place; others are converted in blocks of
// `block` rows into a scratch buffer (row stride hd).
struct RowSource {
    const uint8_t* base;  // row 0 of the sequence
    size_t row_bytes;     // bytes per cache row (all KV heads)
    size_t head_offset;   // byte offset of this KV head's slice in a row
    GgmlType type;
    int hd;
};

// Compiler barrier: v must be in a register here, so that GCC does not fold its load into each
// FMA that uses it (which doubles the loads per FMA).
PIPELM_AVX2 inline void keep_in_register(__m256& v) { __asm__("" : "+x"(v)); }

// K-row tile × head tile of the scores. q[h]: query of head h; k: row 0 of the tile, row stride
// ldk floats; s[h * lds + r] = score of head h against row r.
template <int NJ, int NH>
PIPELM_AVX2 void scores_tile_avx2(const float* const* q, const float* k, int64_t ldk, int hd, float scale, float* s,
                                  int64_t lds) {
    __m256 acc[NJ][NH];
    for (int r = 0; r < NJ; ++r)
        for (int h = 0; h < NH; ++h) acc[r][h] = _mm256_setzero_ps();
    const int hd8 = hd & ~7;
    for (int c = 0; c < hd8; c += 8) {
        __m256 kv[NJ];
        for (int r = 0; r < NJ; ++r) kv[r] = _mm256_loadu_ps(k + r * ldk + c);
        for (int h = 0; h < NH; ++h) {
            __m256 qv = _mm256_loadu_ps(q[h] + c);
            keep_in_register(qv);  // loaded once, used NJ times (not re-loaded per FMA)
            for (int r = 0; r < NJ; ++r) acc[r][h] = _mm256_fmadd_ps(qv, kv[r], acc[r][h]);
        }
    }
    if constexpr (NJ == 2 && NH == 4) {
        if (hd8 == hd) {
            // Eight sums at once: w = [h0r0, h0r1, h1r0, h1r1, h2r0, h2r1, h3r0, h3r1], each
            // ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) as in reduce_lanes.
            const __m256 t0 = _mm256_hadd_ps(acc[0][0], acc[1][0]), t1 = _mm256_hadd_ps(acc[0][1], acc[1][1]);
            const __m256 t2 = _mm256_hadd_ps(acc[0][2], acc[1][2]), t3 = _mm256_hadd_ps(acc[0][3], acc[1][3]);
            const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
            const __m256 w = _mm256_mul_ps(_mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)),
                                           _mm256_set1_ps(scale));
            const __m128 lo = _mm256_castps256_ps128(w), hi = _mm256_extractf128_ps(w, 1);
            _mm_storel_pi(reinterpret_cast<__m64*>(s), lo);
            _mm_storeh_pi(reinterpret_cast<__m64*>(s + lds), lo);
            _mm_storel_pi(reinterpret_cast<__m64*>(s + 2 * lds), hi);
            _mm_storeh_pi(reinterpret_cast<__m64*>(s + 3 * lds), hi);
            return;
        }
    }
    for (int r = 0; r < NJ; ++r)
        for (int h = 0; h < NH; ++h) {
            // ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
            const __m256 x = _mm256_hadd_ps(acc[r][h], acc[r][h]);
            const __m256 y = _mm256_hadd_ps(x, x);
            float d = _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1)));
            for (int c = hd8; c < hd; ++c) d = std::fma(q[h][c], k[r * ldk + c], d);
            s[h * lds + r] = d * scale;
        }
}

// Head tile × (8·NC)-column tile of softmax·V over rows [0, nr): acc[h][c] lives in `acc`
// (row stride hd floats) between calls and in registers inside.
template <int NH, int NC>
PIPELM_AVX2 void pv_tile_avx2(const float* p, int64_t ldp, const float* v, int64_t ldv, int nr, float* acc, int hd) {
    __m256 a[NH][NC];
    for (int h = 0; h < NH; ++h)
        for (int c = 0; c < NC; ++c) a[h][c] = _mm256_loadu_ps(acc + h * hd + 8 * c);
    for (int j = 0; j < nr; ++j) {
        __m256 vv[NC];
        for (int c = 0; c < NC; ++c) vv[c] = _mm256_loadu_ps(v + j * ldv + 8 * c);
        for (int h = 0; h < NH; ++h) {
            const __m256 b = _mm256_broadcast_ss(p + h * ldp + j);
            for (int c = 0; c < NC; ++c) a[h][c] = _mm256_fmadd_ps(b, vv[c], a[h][c]);
        }
    }
    for (int h = 0; h < NH; ++h)
        for (int c = 0; c < NC; ++c) _mm256_storeu_ps(acc + h * hd + 8 * c, a[h][c]);
}

// The same for NC = 2 with named accumulators (GCC keeps the array version's accumulators in
// memory across the row loop). Same operations as pv_tile_avx2<NH, 2>.
template <int NH>
PIPELM_AVX2 void pv_tile16_avx2(const float* p, int64_t ldp, const float* v, int64_t ldv, int nr, float* acc, int hd) {
    static_assert(NH >= 1 && NH <= 4, "tile of 1..4 heads");
    const float* p0 = p;
    const float* p1 = p + (NH > 1 ? ldp : 0);
    const float* p2 = p + (NH > 2 ? 2 * ldp : 0);
    const float* p3 = p + (NH > 3 ? 3 * ldp : 0);
    __m256 a00 = _mm256_loadu_ps(acc), a01 = _mm256_loadu_ps(acc + 8);
    __m256 a10 = a00, a11 = a01, a20 = a00, a21 = a01, a30 = a00, a31 = a01;
    if constexpr (NH > 1) a10 = _mm256_loadu_ps(acc + hd), a11 = _mm256_loadu_ps(acc + hd + 8);
    if constexpr (NH > 2) a20 = _mm256_loadu_ps(acc + 2 * hd), a21 = _mm256_loadu_ps(acc + 2 * hd + 8);
    if constexpr (NH > 3) a30 = _mm256_loadu_ps(acc + 3 * hd), a31 = _mm256_loadu_ps(acc + 3 * hd + 8);
    for (int j = 0; j < nr; ++j) {
        const __m256 v0 = _mm256_loadu_ps(v + j * ldv), v1 = _mm256_loadu_ps(v + j * ldv + 8);
        __m256 b = _mm256_broadcast_ss(p0 + j);
        a00 = _mm256_fmadd_ps(b, v0, a00);
        a01 = _mm256_fmadd_ps(b, v1, a01);
        if constexpr (NH > 1) {
            b = _mm256_broadcast_ss(p1 + j);
            a10 = _mm256_fmadd_ps(b, v0, a10);
            a11 = _mm256_fmadd_ps(b, v1, a11);
        }
        if constexpr (NH > 2) {
            b = _mm256_broadcast_ss(p2 + j);
            a20 = _mm256_fmadd_ps(b, v0, a20);
            a21 = _mm256_fmadd_ps(b, v1, a21);
        }
        if constexpr (NH > 3) {
            b = _mm256_broadcast_ss(p3 + j);
            a30 = _mm256_fmadd_ps(b, v0, a30);
            a31 = _mm256_fmadd_ps(b, v1, a31);
        }
    }
    _mm256_storeu_ps(acc, a00);
    _mm256_storeu_ps(acc + 8, a01);
    if constexpr (NH > 1) _mm256_storeu_ps(acc + hd, a10), _mm256_storeu_ps(acc + hd + 8, a11);
    if constexpr (NH > 2) _mm256_storeu_ps(acc + 2 * hd, a20), _mm256_storeu_ps(acc + 2 * hd + 8, a21);
    if constexpr (NH > 3) _mm256_storeu_ps(acc + 3 * hd, a30), _mm256_storeu_ps(acc + 3 * hd + 8, a31);
}

constexpr int kScoreRows = 2, kScoreHeads = 4;  // scores register tile (8 accumulators)
constexpr int kPvHeads = 4, kPvCols = 2;        // softmax·V register tile (8 accumulators)

template <int NJ>
PIPELM_AVX2 void scores_rows_avx2(const float* const* q, int nh, const float* k, int64_t ldk, int hd, float scale,
                                  float* s, int64_t lds) {
    int h = 0;
    for (; h + 4 <= nh; h += 4) scores_tile_avx2<NJ, 4>(q + h, k, ldk, hd, scale, s + h * lds, lds);
    switch (nh - h) {
        case 3: scores_tile_avx2<NJ, 3>(q + h, k, ldk, hd, scale, s + h * lds, lds); break;
        case 2: scores_tile_avx2<NJ, 2>(q + h, k, ldk, hd, scale, s + h * lds, lds); break;
        case 1: scores_tile_avx2<NJ, 1>(q + h, k, ldk, hd, scale, s + h * lds, lds); break;
        default: break;
    }
}

// s[h * lds + r] for rows r < nr of a block (row stride ldk floats).
PIPELM_AVX2 void scores_block_avx2(const float* const* q, int nh, const float* k, int64_t ldk, int nr, int hd,
                                   float scale, float* s, int64_t lds) {
    static_assert(kScoreRows == 2 && kScoreHeads == 4, "dispatch below");
    int r = 0;
    for (; r + 2 <= nr; r += 2) scores_rows_avx2<2>(q, nh, k + r * ldk, ldk, hd, scale, s + r, lds);
    if (r < nr) scores_rows_avx2<1>(q, nh, k + r * ldk, ldk, hd, scale, s + r, lds);
}

template <int NH>
PIPELM_AVX2 void pv_heads_avx2(const float* p, int64_t ldp, const float* v, int64_t ldv, int nr, float* acc, int hd) {
    const int hd8 = hd & ~7;
    int c = 0;
    for (; c + 16 <= hd8; c += 16) pv_tile16_avx2<NH>(p, ldp, v + c, ldv, nr, acc + c, hd);
    if (c < hd8) pv_tile_avx2<NH, 1>(p, ldp, v + c, ldv, nr, acc + c, hd);
    for (c = hd8; c < hd; ++c)
        for (int h = 0; h < NH; ++h) {
            float x = acc[h * hd + c];
            for (int j = 0; j < nr; ++j) x = std::fma(p[h * ldp + j], v[j * ldv + c], x);
            acc[h * hd + c] = x;
        }
}

PIPELM_AVX2 void pv_block_avx2(const float* p, int64_t ldp, int nh, const float* v, int64_t ldv, int nr, float* acc,
                               int hd) {
    static_assert(kPvHeads == 4 && kPvCols == 2, "dispatch above");
    int h = 0;
    for (; h + 4 <= nh; h += 4) pv_heads_avx2<4>(p + h * ldp, ldp, v, ldv, nr, acc + h * hd, hd);
    switch (nh - h) {
        case 3: pv_heads_avx2<3>(p + h * ldp, ldp, v, ldv, nr, acc + h * hd, hd); break;
        case 2: pv_heads_avx2<2>(p + h * ldp, ldp, v, ldv, nr, acc + h * hd, hd); break;
        case 1: pv_heads_avx2<1>(p + h * ldp, ldp, v, ldv, nr, acc + h * hd, hd); break;
        default: break;
    }
}

// Rows [j0, j0 + nr) of src as floats: a pointer into the cache (f32) or into buf (row stride hd).
PIPELM_AVX2 const float* rows_avx2(const RowSource& src, int j0, int nr, float* buf, int64_t* ld) {
    const uint8_t* row = src.base + static_cast<size_t>(j0) * src.row_bytes + src.head_offset;
    const int hd = src.hd;
    if (src.type == GgmlType::kF32) {
        *ld = static_cast<int64_t>(src.row_bytes / sizeof(float));
        return reinterpret_cast<const float*>(row);
    }
    *ld = hd;
    for (int r = 0; r < nr; ++r, row += src.row_bytes) {
        float* d = buf + static_cast<int64_t>(r) * hd;
        if (src.type == GgmlType::kF16) {
            const auto* h = reinterpret_cast<const uint16_t*>(row);
            int c = 0;
            for (; c + 8 <= hd; c += 8)
                _mm256_storeu_ps(d + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + c))));
            for (; c < hd; ++c) d[c] = fp16_to_f32(h[c]);
        } else if (src.type == GgmlType::kQ8_0) {
            // Blocks of 34 bytes: fp16 scale, 32 int8; value = q * d (exact in f32).
            for (int b = 0; b < hd / 32; ++b) {
                const uint8_t* blk = row + 34 * b;
                uint16_t dh;
                std::memcpy(&dh, blk, 2);
                const __m256 dv = _mm256_set1_ps(fp16_to_f32(dh));
                for (int c = 0; c < 32; c += 8) {
                    const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + c));
                    _mm256_storeu_ps(d + 32 * b + c, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), dv));
                }
            }
        } else {
            dequantize_row(src.type, row, d, hd);
        }
    }
    return buf;
}

// Prefetches rows [j0, j1) of src (this KV head's slice of each row) toward the core: a decode
// step reads its K and V rows once, right after a weight matrix has streamed ~1 MB past them, so
// they come from DRAM, and the hardware prefetcher (which stops at each 4 KiB page) left the
// score loop stalled on them (75 % of its samples on the K loads, Zen 5). No effect on the bits.
// kLocality as __builtin_prefetch's: 3 = all levels (prefetcht0), 2 = L2 and out (prefetcht1).
template <int kLocality>
void prefetch_rows(const RowSource& src, int j0, int j1) {
    const size_t bytes = ggml_row_bytes(src.type, src.hd);
    const char* row = reinterpret_cast<const char*>(src.base) + static_cast<size_t>(j0) * src.row_bytes + src.head_offset;
    for (int j = j0; j < j1; ++j, row += src.row_bytes)
        for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(row + off, 0, kLocality);
}

const float* rows_scalar(const RowSource& src, int j0, int nr, float* buf, int64_t* ld) {
    const uint8_t* row = src.base + static_cast<size_t>(j0) * src.row_bytes + src.head_offset;
    if (src.type == GgmlType::kF32) {
        *ld = static_cast<int64_t>(src.row_bytes / sizeof(float));
        return reinterpret_cast<const float*>(row);
    }
    *ld = src.hd;
    for (int r = 0; r < nr; ++r, row += src.row_bytes) dequantize_row(src.type, row, buf + static_cast<int64_t>(r) * src.hd, src.hd);
    return buf;
}

// Softmax of one head's scores in place (p = exp(s - max)); returns the sum (order above).
PIPELM_AVX2 double softmax_avx2(float* s, int n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
    alignas(32) float ml[8];
    _mm256_store_ps(ml, mv);
    float mx = -INFINITY;
    for (float x : ml) mx = std::max(mx, x);
    for (; j < n; ++j) mx = std::max(mx, s[j]);
    const __m256 mxv = _mm256_set1_ps(mx);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    const int n8 = n & ~7;
    for (j = 0; j < n8; j += 8) {
        const __m256 e = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), mxv));
        _mm256_storeu_ps(s + j, e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    alignas(32) double h[4];
    _mm256_store_pd(h, _mm256_add_pd(lo, hi));  // h[l] = l_l + l_{l+4}
    double sum = (h[0] + h[2]) + (h[1] + h[3]);
    for (; j < n; ++j) {
        s[j] = exp_scalar(s[j] - mx);
        sum += s[j];
    }
    return sum;
}

double softmax_scalar(float* s, int n) {
    float mx = -INFINITY;
    for (int j = 0; j < n; ++j) mx = std::max(mx, s[j]);
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int n8 = n & ~7;
    int j = 0;
    for (; j < n8; ++j) {
        s[j] = exp_scalar(s[j] - mx);
        l[j & 7] += s[j];
    }
    double sum = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    for (; j < n; ++j) {
        s[j] = exp_scalar(s[j] - mx);
        sum += s[j];
    }
    return sum;
}

// Per-thread scratch of one attention call.
struct Scratch {
    std::vector<float> s;    // [nh][lds] scores / probabilities
    std::vector<float> buf;  // [block][hd] converted K or V rows
};

constexpr int kMaxHeads = 64;  // query heads per work item

struct Item {
    int64_t t;
    int g, h0, nh;  // KV head, first query head within the group, number of query heads
};

template <bool kAvx2>
void attend_item(const AttentionArgs& a, const Item& it, int group, int block, Scratch& sc) {
    const int hd = a.head_dim, n = a.n_kv[it.t];
    const bool in_place = a.k_type == GgmlType::kF32 && a.v_type == GgmlType::kF32;
    const int h_first = it.g * group + it.h0;
    float* out = a.out + it.t * a.ldo + static_cast<int64_t>(h_first) * hd;  // [nh][hd]
    std::fill(out, out + static_cast<int64_t>(it.nh) * hd, 0.f);
    if (n <= 0) return;
    const float* q[kMaxHeads];
    for (int h = 0; h < it.nh; ++h) q[h] = a.q + it.t * a.ldq + static_cast<int64_t>(h_first + h) * hd;
    const int64_t row_values = static_cast<int64_t>(a.n_head_kv) * hd, head_values = static_cast<int64_t>(it.g) * hd;
    const RowSource K{static_cast<const uint8_t*>(a.k_rows[it.t]), ggml_row_bytes(a.k_type, row_values),
                      ggml_row_bytes(a.k_type, head_values), a.k_type, hd};
    const RowSource V{static_cast<const uint8_t*>(a.v_rows[it.t]), ggml_row_bytes(a.v_type, row_values),
                      ggml_row_bytes(a.v_type, head_values), a.v_type, hd};
    const int64_t lds = (n + 15) & ~int64_t{15};
    if (sc.s.size() < static_cast<size_t>(it.nh * lds)) sc.s.resize(it.nh * lds);
    if (!in_place && sc.buf.size() < static_cast<size_t>(block) * hd)
        sc.buf.resize(static_cast<size_t>(block) * hd);
    float* s = sc.s.data();
    // V rows go to L2 during the scores when all of them fit in a quarter of it (decode at short
    // and medium contexts), else a block ahead during softmax·V.
    const bool v_early = static_cast<size_t>(n) * ggml_row_bytes(a.v_type, hd) <= (256u << 10);
    if constexpr (kAvx2) prefetch_rows<3>(K, 0, std::min(block, n));
    // Scores, a block of K rows at a time (f32 rows are read in place: blocks cost nothing).
    for (int j0 = 0; j0 < n; j0 += block) {
        const int nr = std::min(block, n - j0);
        int64_t ldk;
        if constexpr (kAvx2) {
            prefetch_rows<3>(K, j0 + nr, std::min(j0 + nr + block, n));
            if (v_early) prefetch_rows<2>(V, j0, j0 + nr);
            const float* k = rows_avx2(K, j0, nr, sc.buf.data(), &ldk);
            scores_block_avx2(q, it.nh, k, ldk, nr, hd, a.scale, s + j0, lds);
        } else {
            const float* k = rows_scalar(K, j0, nr, sc.buf.data(), &ldk);
            const int hd8 = hd & ~7;
            for (int h = 0; h < it.nh; ++h)
                for (int r = 0; r < nr; ++r) {
                    const float* kr = k + r * ldk;
                    float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    for (int c = 0; c < hd8; ++c) l[c & 7] = std::fma(q[h][c], kr[c], l[c & 7]);
                    float d = reduce_lanes(l);
                    for (int c = hd8; c < hd; ++c) d = std::fma(q[h][c], kr[c], d);
                    s[h * lds + j0 + r] = d * a.scale;
                }
        }
    }
    if constexpr (kAvx2)
        if (!v_early) prefetch_rows<3>(V, 0, std::min(block, n));  // during the softmax
    // Softmax (unnormalized probabilities; the 1/sum is applied to the output).
    float inv[kMaxHeads];
    for (int h = 0; h < it.nh; ++h) {
        double sum;
        if constexpr (kAvx2) sum = softmax_avx2(s + h * lds, n);
        else sum = softmax_scalar(s + h * lds, n);
        inv[h] = static_cast<float>(1.0 / sum);
    }
    // softmax·V into out, a block of V rows at a time.
    for (int j0 = 0; j0 < n; j0 += block) {
        const int nr = std::min(block, n - j0);
        int64_t ldv;
        if constexpr (kAvx2) {
            if (!v_early) prefetch_rows<3>(V, j0 + nr, std::min(j0 + nr + block, n));
            const float* v = rows_avx2(V, j0, nr, sc.buf.data(), &ldv);
            pv_block_avx2(s + j0, lds, it.nh, v, ldv, nr, out, hd);
        } else {
            const float* v = rows_scalar(V, j0, nr, sc.buf.data(), &ldv);
            for (int h = 0; h < it.nh; ++h)
                for (int c = 0; c < hd; ++c) {
                    float x = out[h * hd + c];
                    for (int r = 0; r < nr; ++r) x = std::fma(s[h * lds + j0 + r], v[r * ldv + c], x);
                    out[h * hd + c] = x;
                }
        }
    }
    for (int h = 0; h < it.nh; ++h)
        for (int c = 0; c < hd; ++c) out[h * hd + c] *= inv[h];
}

}  // namespace

void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff, ThreadPool& pool) {
    const bool avx2 = detail::isa_avx2(detail::active_isa());
    // Grains of 4096 values (a few microseconds each): a one-token step runs on the calling
    // thread instead of waking the pool for less work than the wake-up costs.
    pool.parallel_for(n_tokens * n_ff, [&](int64_t b, int64_t e, int) {
        // [b, e) crosses token rows; each row's segment is done on its own.
        while (b < e) {
            const int64_t t = b / n_ff, i = b % n_ff, len = std::min(e - b, n_ff - i);
            const float* g = gu + t * 2 * n_ff + i;
            if (avx2) swiglu_row_avx2(g, g + n_ff, out + b, len);
            else swiglu_row_scalar(g, g + n_ff, out + b, len);
            b += len;
        }
    }, 4096);
}

void attention(const AttentionArgs& a, ThreadPool& pool) {
    if (a.n_tokens <= 0) return;
    PIPELM_CHECK(a.n_head_kv > 0 && a.n_head % a.n_head_kv == 0, "attention: n_head ", a.n_head,
                 " is not a multiple of n_head_kv ", a.n_head_kv);
    for (GgmlType t : {a.k_type, a.v_type})
        PIPELM_CHECK(a.head_dim > 0 && a.head_dim % ggml_type_info(t).block == 0, "attention: head_dim ", a.head_dim,
                     " is not a multiple of the ", ggml_type_name(t), " block size");
    const int group = a.n_head / a.n_head_kv;
    const int n_threads = pool.size();
    // Work items (t, g, head chunk), t-major. A batch with fewer (t, g) pairs than threads
    // (decode) splits each group's heads into chunks so that every thread gets work; a head's
    // operations do not depend on which chunk it is in. Chunks hold at most kMaxHeads heads.
    int chunk = std::min(group, kMaxHeads);
    const int64_t pairs = a.n_tokens * a.n_head_kv;
    while (pairs * ((group + chunk - 1) / chunk) < n_threads && chunk % 2 == 0 && chunk > 2) chunk /= 2;
    const int per_group = (group + chunk - 1) / chunk;
    std::vector<Item> items;
    items.reserve(pairs * per_group);
    // Cost of an item ~ heads * (n_kv + a constant for the per-item overhead); prefix sums.
    std::vector<int64_t> cost_end;
    cost_end.reserve(pairs * per_group);
    int64_t total = 0;
    for (int64_t t = 0; t < a.n_tokens; ++t)
        for (int g = 0; g < a.n_head_kv; ++g)
            for (int h0 = 0; h0 < group; h0 += chunk) {
                const int nh = std::min(chunk, group - h0);
                items.push_back({t, g, h0, nh});
                total += static_cast<int64_t>(nh) * (std::max(a.n_kv[t], 0) + 16);
                cost_end.push_back(total);
            }
    const int hd = a.head_dim;
    const int block = std::max(8, std::min(64, 4096 / std::max(hd, 1)));  // converted rows per block (~16 KiB)
    const bool avx2 = detail::isa_avx2(detail::active_isa());
    const int64_t n_items = static_cast<int64_t>(items.size());
    auto run_range = [&](int64_t i0, int64_t i1) {
        Scratch sc;
        for (int64_t i = i0; i < i1; ++i) {
            if (avx2) attend_item<true>(a, items[i], group, block, sc);
            else attend_item<false>(a, items[i], group, block, sc);
        }
    };
    if (n_threads == 1 || n_items == 1) {
        run_range(0, n_items);
        return;
    }
    // Thread k takes the items whose cost ends in (total*k/T, total*(k+1)/T]: contiguous ranges
    // of about equal cost (causal prefill: later tokens cost more).
    auto first_item = [&](int k) -> int64_t {
        if (k >= n_threads) return n_items;
        const int64_t bound = total * k / n_threads;
        return std::upper_bound(cost_end.begin(), cost_end.end(), bound) - cost_end.begin();
    };
    pool.run_on_all([&](int k) { run_range(first_item(k), first_item(k + 1)); });
}

}  // namespace pipelm::kernels
