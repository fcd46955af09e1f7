// AVX-512 (F/DQ/BW/VL) prefill GEMM for the exact path (kNone): y[t][r] = Σ_k W[r][k] · x[t][k]
// with FP32 activations and FP32 accumulation, every weight type of quant.h.
//
// Same contract as matmul_avx2.cc (kernels/cpu/matmul_internal.h): for every (r, t) one 8-lane
// accumulator, lane l takes w[k]*x[k] for k ≡ l (mod 8) in increasing k with a fused multiply-add,
// then the fixed reduction. A zmm holds the 8 lanes of two rows for one token: [row a | row b]
// from the decoded panel times the token's 8 activations broadcast to both halves, so each lane
// is still one (row, token, k mod 8) chain with exactly the AVX2 sequence: the same bits.
//
// Blocking (per thread, rows [r0, r1)): row groups of 8 rows x k blocks of kKC values, decoded
// once per token block into a panel [step of 8 k][8 rows][8] (16 KiB, L1) with the AVX2 decoders;
// an 8-row x 4-token register tile (16 zmm accumulators, 4 weight + 4 broadcast loads per 16
// FMAs) sweeps the token block, whose activations stay in L2. Between k blocks the accumulators
// are stored to and reloaded from cacc unchanged. Decode (1-8 tokens) of the float types runs a
// zmm GEMV below; the other types' decode stays on the AVX2 GEMV.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/matmul.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl")
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -W(maybe-)uninitialized
// reports at every inlined use (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "kernels/cpu/decode_avx2.h"

namespace pipelm::kernels::detail {
namespace {

constexpr int kMR = 8;      // rows per row group (4 zmm row pairs)
constexpr int kKC = 512;    // k values per block (multiple of every block size)
constexpr int kNC = 128;    // tokens per token block (multiple of 4)
constexpr int kPanelSteps = kKC / 8 + 1;  // + a zero-padded tail step (float types)

// Decodes blocks [b0, b1) of `mr` rows (w, stride rb) into panel[step][8 rows][8]; rows >= mr
// are zero (the tiles compute them and drop the results); float types add the masked tail step.
template <class D>
void decode_panel(const uint8_t* w, size_t rb, int mr, int64_t b0, int64_t b1, int tail, float* panel) {
    const int64_t steps = (b1 - b0) * (D::QK / 8) + (tail > 0 ? 1 : 0);
    for (int i = 0; i < kMR; ++i) {
        if (i >= mr) {
            for (int64_t s = 0; s < steps; ++s) _mm256_store_ps(panel + s * 64 + i * 8, _mm256_setzero_ps());
            continue;
        }
        const uint8_t* row = w + i * rb;
        for (int64_t b = b0; b < b1; ++b) {
            float* dst = panel + (b - b0) * (D::QK / 8) * 64 + i * 8;
            decode_block<D>(row + b * D::BYTES, [&](int v, __m256 wv) AI_LAMBDA { _mm256_store_ps(dst + v * 64, wv); });
        }
        if constexpr (D::QK == 8) {
            if (tail > 0) _mm256_store_ps(panel + (b1 - b0) * 64 + i * 8, D::tail(row + b1 * D::BYTES, tail));
        }
    }
}


// Register tile: RP row pairs (rows 2p, 2p+1 of the panel) x NT tokens x[t*ldx + 8s] of the
// current k block: `steps` full steps, then, if tail > 0, one step whose x loads are masked to
// `tail` lanes (the panel is zero there). Accumulators [RP][NT] start at +0 (first k block) or
// come from cacc[((2p)*kNC + t)*8] (row 2p's 8 lanes, then row 2p+1's at +kNC*8); after the last
// k block they are reduced into y[t*ldy + row] for rows < mr, otherwise stored back.
template <int RP, int NT>
__attribute__((noinline)) void tile(const float* wp, int64_t steps, int tail, const float* x, int64_t ldx,
                                    float* cacc, bool first, bool last, float* y, int64_t ldy, int mr) {
    __m512 acc[RP][NT];
    static_for<RP>([&](auto p) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA {
            if (first) {
                acc[p][t] = _mm512_setzero_ps();
            } else {
                const float* c = cacc + (2 * p * kNC + t) * 8;
                acc[p][t] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_load_ps(c)), _mm256_load_ps(c + kNC * 8), 1);
            }
        });
    });
    auto step = [&](const float* ws, __m512 (&xv)[NT]) AI_LAMBDA {
        static_for<RP>([&](auto p) AI_LAMBDA {
            const __m512 wv = _mm512_load_ps(ws + 16 * p);
            static_for<NT>([&](auto t) AI_LAMBDA { acc[p][t] = _mm512_fmadd_ps(wv, xv[t], acc[p][t]); });
        });
    };
    for (int64_t s = 0; s < steps; ++s) {
        __m512 xv[NT];
        static_for<NT>([&](auto t) AI_LAMBDA { xv[t] = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + t * ldx + 8 * s)); });
        step(wp + 64 * s, xv);
    }
    if (tail > 0) {
        const __mmask8 m = static_cast<__mmask8>((1u << tail) - 1);
        __m512 xv[NT];
        static_for<NT>([&](auto t) AI_LAMBDA {
            xv[t] = _mm512_broadcast_f32x8(_mm256_maskz_loadu_ps(m, x + t * ldx + 8 * steps));
        });
        step(wp + 64 * steps, xv);
    }
    static_for<RP>([&](auto p) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA {
            const __m256 lo = _mm512_castps512_ps256(acc[p][t]), hi = _mm512_extractf32x8_ps(acc[p][t], 1);
            if (last) {
                if (2 * p < mr) y[t * ldy + 2 * p] = hsum8(lo);
                if (2 * p + 1 < mr) y[t * ldy + 2 * p + 1] = hsum8(hi);
            } else {
                float* c = cacc + (2 * p * kNC + t) * 8;
                _mm256_store_ps(c, lo);
                _mm256_store_ps(c + kNC * 8, hi);
            }
        });
    });
}

using TileFn = void (*)(const float*, int64_t, int, const float*, int64_t, float*, bool, bool, float*, int64_t, int);

template <int RP>
TileFn tile_for_nt(int nt) {
    switch (nt) {
        case 4: return tile<RP, 4>;
        case 3: return tile<RP, 3>;
        case 2: return tile<RP, 2>;
        default: return tile<RP, 1>;
    }
}
TileFn tile_for(int rp, int nt) {
    switch (rp) {
        case 4: return tile_for_nt<4>(nt);
        case 3: return tile_for_nt<3>(nt);
        case 2: return tile_for_nt<2>(nt);
        default: return tile_for_nt<1>(nt);
    }
}

template <class D>
void gemm(const WeightView& wv, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy,
          int64_t n) {
    const uint8_t* base = static_cast<const uint8_t*>(wv.data);
    const size_t rb = wv.row_bytes;
    const int64_t nblk = wv.cols / D::QK;
    const int ktail = static_cast<int>(wv.cols % D::QK);  // float types only
    constexpr int64_t kBlocksPerKC = kKC / D::QK;
    float* panel = thread_scratch(1, static_cast<size_t>(kPanelSteps) * 64);
    float* cacc = thread_scratch(2, static_cast<size_t>(kMR) * kNC * 8);
    for (int64_t rg = r0; rg < r1; rg += kMR) {
        const int mr = static_cast<int>(min64(kMR, r1 - rg));
        const int rp = (mr + 1) / 2;
        for (int64_t tb = 0; tb < n; tb += kNC) {
            const int64_t nc = min64(kNC, n - tb);
            for (int64_t b0 = 0;; b0 += kBlocksPerKC) {
                const int64_t b1 = min64(nblk, b0 + kBlocksPerKC);
                const bool first = b0 == 0, last = b1 == nblk;
                const int tail = last ? ktail : 0;
                const int64_t steps = (b1 - b0) * (D::QK / 8);
                decode_panel<D>(base + rg * rb, rb, mr, b0, b1, tail, panel);
                // Prefetch what the next decode_panel reads (this row group's next k block, or
                // the next row group's first one).
                if (!last)
                    prefetch_rows(base + rg * rb + b1 * D::BYTES, rb, mr, (min64(nblk, b1 + kBlocksPerKC) - b1) * D::BYTES);
                else if (tb + kNC >= n && rg + kMR < r1)
                    prefetch_rows(base + (rg + kMR) * rb, rb, static_cast<int>(min64(kMR, r1 - rg - kMR)),
                                  min64(nblk, kBlocksPerKC) * D::BYTES);
                const TileFn t4 = tile_for(rp, 4);
                for (int64_t t0 = 0, nt; t0 < nc; t0 += nt) {
                    nt = min64(4, nc - t0);
                    const TileFn fn = nt == 4 ? t4 : tile_for(rp, static_cast<int>(nt));
                    fn(panel, steps, tail, x + (tb + t0) * ldx + b0 * D::QK, ldx, cacc + t0 * 8, first, last,
                       y + (tb + t0) * ldy + rg, ldy, mr);
                }
                if (last) break;
            }
        }
    }
}

// ============================================================================ GEMV (float types)
// Decode (n <= gemv_max_tokens: 1-8 tokens) of F32, F16 and BF16 weights. Memory-bound on paper,
// but on a core that reads 30+ GB/s the AVX2 GEMV's work per 8 weights (one convert, one
// prefetch per row and block, NT FMAs per row) kept F16 at 0.8 of the read bandwidth (Zen 5). Here
// a zmm holds rows a and b ([a | b]): one convert per 16 weights, one FMA per row pair and token
// against the token's 8 activations broadcast to both halves, one prefetch per row and 64 bytes.
// Each lane is still one (row, token, k mod 8) chain of the contract: the AVX2 bits.

// Elements 8b .. 8b+7 of rows a and b (block b at a and b) as [a | b], exactly as the AVX2 decoder.
template <class D>
PIPELM_AI __m512 load_pair(const uint8_t* a, const uint8_t* b) {
    if constexpr (D::BYTES == 32) {  // F32
        return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(reinterpret_cast<const float*>(a))),
                                  _mm256_loadu_ps(reinterpret_cast<const float*>(b)), 1);
    } else {
        const __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                                                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
        if constexpr (std::is_same_v<D, DecF16>)
            return _mm512_cvtph_ps(h);
        else  // BF16: the 16 bits become the high half
            return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
}

// How far ahead of each row stream to prefetch. Zen 5 (2 threads, 61-layer F16 model, tg64 t/s in
// alternating rounds): 512 bytes 19.3-20.6, 1024 21.6-24.8, 2048 24.7-27.2, 4096 20.6-22.8.
constexpr int kGemvPrefetchBytes = 2048;

// 4 rows (row i at w + i*rb; pairs (0, 1) and (2, 3)) x NT tokens x[t*ldx + k]: nblk blocks of 8
// values, then `tail` (< 8) more; writes y[t*ldy + i*ys]. Weight bytes are streamed once.
template <class D, int NT>
__attribute__((noinline)) void gemv_tile_f(const uint8_t* w, size_t rb, int64_t nblk, int tail, const float* x,
                                           int64_t ldx, float* y, int64_t ldy, int64_t ys) {
    __m512 acc[2][NT];
    static_for<NT>([&](auto t) AI_LAMBDA { acc[0][t] = acc[1][t] = _mm512_setzero_ps(); });
    auto step = [&](const uint8_t* wb, const float* xb) AI_LAMBDA {
        const __m512 w01 = load_pair<D>(wb, wb + rb), w23 = load_pair<D>(wb + 2 * rb, wb + 3 * rb);
        static_for<NT>([&](auto t) AI_LAMBDA {
            const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(xb + t * ldx));
            acc[0][t] = _mm512_fmadd_ps(w01, xv, acc[0][t]);
            acc[1][t] = _mm512_fmadd_ps(w23, xv, acc[1][t]);
        });
    };
    constexpr int G = 64 / D::BYTES;  // blocks per 64 bytes of a row: F32 2, F16/BF16 4
    int64_t b = 0;
    for (; b + G <= nblk; b += G) {
        const uint8_t* wb = w + b * D::BYTES;
        static_for<4>([&](auto i) AI_LAMBDA {
            _mm_prefetch(reinterpret_cast<const char*>(wb + i * rb + kGemvPrefetchBytes), _MM_HINT_T0);
        });
        static_for<G>([&](auto g) AI_LAMBDA { step(wb + g * D::BYTES, x + (b + g) * 8); });
    }
    for (; b < nblk; ++b) step(w + b * D::BYTES, x + b * 8);
    if (tail > 0) {
        const uint8_t* wt = w + nblk * D::BYTES;
        const __m512 w01 = _mm512_insertf32x8(_mm512_castps256_ps512(D::tail(wt, tail)), D::tail(wt + rb, tail), 1);
        const __m512 w23 = _mm512_insertf32x8(_mm512_castps256_ps512(D::tail(wt + 2 * rb, tail)), D::tail(wt + 3 * rb, tail), 1);
        const __mmask8 m = static_cast<__mmask8>((1u << tail) - 1);
        static_for<NT>([&](auto t) AI_LAMBDA {
            const __m512 xv = _mm512_broadcast_f32x8(_mm256_maskz_loadu_ps(m, x + nblk * 8 + t * ldx));
            acc[0][t] = _mm512_fmadd_ps(w01, xv, acc[0][t]);
            acc[1][t] = _mm512_fmadd_ps(w23, xv, acc[1][t]);
        });
    }
    static_for<NT>([&](auto t) AI_LAMBDA {
        static_for<2>([&](auto p) AI_LAMBDA {
            y[t * ldy + (2 * p) * ys] = hsum8(_mm512_castps512_ps256(acc[p][t]));
            y[t * ldy + (2 * p + 1) * ys] = hsum8(_mm512_extractf32x8_ps(acc[p][t], 1));
        });
    });
}

template <class D>
using GemvFn = void (*)(const uint8_t*, size_t, int64_t, int, const float*, int64_t, float*, int64_t, int64_t);

template <class D>
GemvFn<D> gemv_tile_for(int64_t n) {
    switch (n) {
        case 1: return gemv_tile_f<D, 1>;
        case 2: return gemv_tile_f<D, 2>;
        case 3: return gemv_tile_f<D, 3>;
        case 4: return gemv_tile_f<D, 4>;
        case 5: return gemv_tile_f<D, 5>;
        case 6: return gemv_tile_f<D, 6>;
        case 7: return gemv_tile_f<D, 7>;
        default: return gemv_tile_f<D, 8>;
    }
}

// Rows [r0, r1), 1 <= n <= 8 tokens in one pass. As the AVX2 GEMV, the 4 rows of a tile come from
// 4 contiguous quarters of the range (4 weight streams that run through memory for the whole
// call); the leftover (r1 - r0) % 4 rows go to the AVX2 GEMV (same bits).
template <class D>
void gemv_f(const WeightView& wv, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy,
            int64_t n) {
    const uint8_t* base = static_cast<const uint8_t*>(wv.data);
    const size_t rb = wv.row_bytes;
    const int64_t nblk = wv.cols / 8;
    const int tail = static_cast<int>(wv.cols % 8);
    const int64_t quarter = (r1 - r0) / 4;
    const GemvFn<D> fn = gemv_tile_for<D>(n);
    for (int64_t q = 0; q < quarter; ++q) fn(base + (r0 + q) * rb, quarter * rb, nblk, tail, x, ldx, y + r0 + q, ldy, quarter);
    if (r0 + 4 * quarter < r1) matmul_block_avx2(wv, r0 + 4 * quarter, r1, x, ldx, y, ldy, n);
}

template <class D>
void run(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy,
         int64_t n) {
    if (n <= gemv_max_tokens(w.type)) {
        if constexpr (D::QK == 8) {
            if (n >= 1 && n <= 8) {
                gemv_f<D>(w, r0, r1, x, ldx, y, ldy, n);
                return;
            }
        }
        matmul_block_avx2(w, r0, r1, x, ldx, y, ldy, n);
    } else {
        gemm<D>(w, r0, r1, x, ldx, y, ldy, n);
    }
}

}  // namespace

void matmul_block_avx512(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                         int64_t ldy, int64_t n) {
    if (!with_decoder(w.type, [&](auto d) { run<decltype(d)>(w, r0, r1, x, ldx, y, ldy, n); }))
        matmul_block_scalar(w, r0, r1, x, ldx, y, ldy, n);  // unreachable: prepare() checks
}

}  // namespace pipelm::kernels::detail

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
