// AVX2+FMA+F16C matmul kernels: y[t][r] = Σ_k W[r][k] · x[t][k], FP32 activations, FP32
// accumulation, every weight type of quant.h read straight from the GGUF block layout.
//
// Compiled for "avx2,fma,f16c" through a target pragma (not -march for the whole build);
// matmul_cpu.cc only calls in here when CPUID reports those features. All standard headers are
// included before the pragma and everything in the region has internal linkage, so no inline
// function compiled for AVX2 can be picked by the linker for generic code.
//
// Accumulation (the contract of matmul_internal.h): for every (r, t) one __m256 accumulator;
// lane l takes w[k]*x[k] for k ≡ l (mod 8), k increasing, via vfmadd231ps; then the fixed
// reduction of hsum8(). GEMV and GEMM tiles just run several such accumulators side by side,
// and the GEMM stores/reloads them unchanged between k blocks, so y[t][r] is bit-identical
// whatever n_tokens, the thread count or the tile holding (r, t).
//
// Thread mapping: matmul_cpu.cc hands each thread a contiguous chunk of rows and calls
// matmul_block_avx2 for it; nothing in here is threaded. n <= gemv_max_tokens() uses the GEMV
// (weights decoded in registers, streamed once: decode is memory bound), larger n the
// panel GEMM (prefill is compute bound).
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/matmul.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "kernels/cpu/decode_avx2.h"

namespace pipelm::kernels::detail {
namespace {

PIPELM_AI __m256i tail_mask(int n) {  // lanes < n all-ones
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// ============================================================================ GEMV
constexpr int kPrefetchBytes = 512;

// Shapes: NR rows of W, row i at w + i*rb, nblk full blocks plus, for float types only, `tail`
// (< 8) more values; NT tokens x[t*ldx + k]; writes y[t*ldy + i*ys].
// Decodes each weight block once, in registers, and FMAs it into all NT tokens. The NR rows
// are interleaved part by part (D::part) so that their NR*NT independent accumulator chains
// are in flight together and hide the FMA latency. Weight bytes are streamed once.
template <class D, int NR, int NT>
__attribute__((noinline)) void gemv_tile(const uint8_t* w, size_t rb, int64_t nblk, int tail, const float* x,
                                         int64_t ldx, float* y, int64_t ldy, int64_t ys) {
    __m256 acc[NR][NT];
    static_for<NR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA { acc[i][t] = _mm256_setzero_ps(); });
    });
    for (int64_t b = 0; b < nblk; ++b) {
        const uint8_t* wb = w + b * D::BYTES;
        // Software prefetch kPrefetchBytes ahead in each row stream (measured: +15-40% GB/s on
        // quantized weights; the hardware prefetchers alone fall behind).
        static_for<NR>([&](auto i) AI_LAMBDA {
            for (int off = 0; off < D::BYTES; off += 64)
                _mm_prefetch(reinterpret_cast<const char*>(wb + i * rb + kPrefetchBytes + off), _MM_HINT_T0);
        });
        typename D::Ctx ctx[NR];
        static_for<NR>([&](auto i) AI_LAMBDA { ctx[i] = D::prep(wb + i * rb); });
        for (int p = 0; p < D::NPART; ++p) {
            const float* xp = x + b * D::QK + p * D::SUBV * 8;
            static_for<NR>([&](auto i) AI_LAMBDA {
                D::part(wb + i * rb, ctx[i], p, [&](int j, __m256 wv) AI_LAMBDA {
                    static_for<NT>([&](auto t) AI_LAMBDA {
                        acc[i][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp + t * ldx + 8 * j), acc[i][t]);
                    });
                });
            });
        }
    }
    if constexpr (D::QK == 8) {
        if (tail > 0) {
            const __m256i m = tail_mask(tail);
            const float* xb = x + nblk * 8;
            static_for<NR>([&](auto i) AI_LAMBDA {
                const __m256 wv = D::tail(w + nblk * D::BYTES + i * rb, tail);
                static_for<NT>([&](auto t) AI_LAMBDA {
                    acc[i][t] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(xb + t * ldx, m), acc[i][t]);
                });
            });
        }
    }
    static_for<NR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA { y[t * ldy + i * ys] = hsum8(acc[i][t]); });
    });
}

// All n tokens for NR rows: the rows' weights are streamed from memory once and re-read from
// cache by the later token groups. 4-row tiles take groups of 3 tokens (4 -> 2 + 2; 4 x 4 would
// need all 16 registers for accumulators), 2-row tiles groups of 4 (8 accumulators; each decoded
// weight vector feeds 4 FMAs instead of 2-3, which is what 4- and 8-token decode steps need).
template <class D, int NR>
void gemv_rows(const uint8_t* w, size_t rb, int64_t nblk, int tail, const float* x, int64_t ldx, float* y,
               int64_t ldy, int64_t ys, int64_t n) {
    for (int64_t t = 0, nt; t < n; t += nt) {
        if constexpr (NR == 2)
            nt = min64(4, n - t);
        else
            nt = n - t == 4 ? 2 : min64(3, n - t);
        const float* xt = x + t * ldx;
        float* yt = y + t * ldy;
        if constexpr (NR == 2) {
            if (nt == 4) {
                gemv_tile<D, NR, 4>(w, rb, nblk, tail, xt, ldx, yt, ldy, ys);
                continue;
            }
        }
        if (nt == 3)
            gemv_tile<D, NR, 3>(w, rb, nblk, tail, xt, ldx, yt, ldy, ys);
        else if (nt == 2)
            gemv_tile<D, NR, 2>(w, rb, nblk, tail, xt, ldx, yt, ldy, ys);
        else
            gemv_tile<D, NR, 1>(w, rb, nblk, tail, xt, ldx, yt, ldy, ys);
    }
}

// Rows [r0, r1), n <= gemv_max_tokens(type) tokens. The 4 rows of a tile come from 4 contiguous
// quarters of the range (rows r0 + q, r0 + Q + q, r0 + 2Q + q, r0 + 3Q + q for q = 0..Q-1), so
// each of the 4 weight streams runs sequentially through memory for the whole call and the
// hardware prefetcher never has to pick up new streams (with consecutive rows, 3 of 4 streams
// would restart every tile, which costs much of the bandwidth on short rows). The leftover
// (r1 - r0) % 4 rows go one by one. Exactly 4 tokens (f32/f16/bf16/q8_0 only: the other types
// switch to the GEMM there): 2-row x 4-token tiles over 2 halves instead (measured, 1 thread:
// Q8_0 +8 %, F16 even; for 5-8 tokens the 4-row tiles in groups of 3 stay faster).
template <class D>
void gemv(const WeightView& wv, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy,
          int64_t n) {
    const uint8_t* base = static_cast<const uint8_t*>(wv.data);
    const size_t rb = wv.row_bytes;
    const int64_t nblk = wv.cols / D::QK;
    const int tail = static_cast<int>(wv.cols % D::QK);
    if (n == 4) {  // 2-row x 4-token tiles, rows from 2 contiguous halves (2 long streams)
        const int64_t half = (r1 - r0) / 2;
        for (int64_t q = 0; q < half; ++q)
            gemv_rows<D, 2>(base + (r0 + q) * rb, half * rb, nblk, tail, x, ldx, y + r0 + q, ldy, half, n);
        for (int64_t r = r0 + 2 * half; r < r1; ++r)
            gemv_rows<D, 1>(base + r * rb, rb, nblk, tail, x, ldx, y + r, ldy, 1, n);
        return;
    }
    const int64_t quarter = (r1 - r0) / 4;
    for (int64_t q = 0; q < quarter; ++q)
        gemv_rows<D, 4>(base + (r0 + q) * rb, quarter * rb, nblk, tail, x, ldx, y + r0 + q, ldy, quarter, n);
    for (int64_t r = r0 + 4 * quarter; r < r1; ++r)
        gemv_rows<D, 1>(base + r * rb, rb, nblk, tail, x, ldx, y + r, ldy, 1, n);
}

// ============================================================================ GEMM
// Blocking (per thread, rows [r0, r1)):
//   row panel of kMC rows  x  token block of kNC tokens  x  k block of kKC values.
// For each row group (4 rows) of the panel, its k block of weights is decoded once into a f32
// buffer laid out [step of 8 k][4 rows][8] (8 KiB, stays in L1), then a 4-row x 3-token
// register tile (12 accumulators, 4 weight + 3 activation loads per 12 FMAs) sweeps all token
// groups of the token block, whose activations (kNC x kKC floats, 192 KiB) stay in L2 and are
// reused by every row group of the panel. Between k blocks the accumulators live in `cacc`
// [kMC rows][kNC tokens][8] (exact f32 store/reload, 96 KiB).
constexpr int kMC = 32;   // rows per panel (8 row groups)
constexpr int kKC = 512;  // k values per block (multiple of every block size)
constexpr int kNC = 96;   // tokens per token block (multiple of 3)
constexpr int kPanelSteps = kKC / 8 + 1;  // + a zero-padded tail step (float types)

// Decodes blocks [b0, b1) of `mr` rows (w, stride rb) into panel[step][4][8] (rows >= mr are
// left untouched: tiles with MR = mr never read them); float types add the masked tail step.
template <class D>
void decode_panel(const uint8_t* w, size_t rb, int mr, int64_t b0, int64_t b1, int tail, float* panel) {
    for (int i = 0; i < mr; ++i) {
        const uint8_t* row = w + i * rb;
        for (int64_t b = b0; b < b1; ++b) {
            float* dst = panel + (b - b0) * (D::QK / 8) * 32 + i * 8;
            decode_block<D>(row + b * D::BYTES, [&](int v, __m256 wv) AI_LAMBDA { _mm256_store_ps(dst + v * 32, wv); });
        }
        if constexpr (D::QK == 8) {
            if (tail > 0) _mm256_store_ps(panel + (b1 - b0) * 32 + i * 8, D::tail(row + b1 * D::BYTES, tail));
        }
    }
}


// Register tile. Shapes: MR (<= 4) rows from the decoded panel `wp` ([step][4 rows][8], 32
// floats per step) x NT (<= 3) tokens x[t*ldx + 8s] of the current k block: `steps` full 8-wide
// steps, then, if tail > 0, one step whose x loads are masked to `tail` lanes (the panel is zero
// there). Accumulation: MR*NT __m256 accumulators, one vfmadd231ps per (row, token, step), so
// each (r, t) sees exactly the GEMV's sequence. They start at +0 (first k block) or come from
// cacc[(i*kNC + t)*8]; after the last k block they are reduced into y[t*ldy + i], otherwise
// stored back to cacc unchanged. Per step: MR weight loads (L1) + NT activation loads (L2).
template <int MR, int NT>
__attribute__((noinline)) void tile(const float* wp, int64_t steps, int tail, const float* x, int64_t ldx,
                                    float* cacc, bool first, bool last, float* y, int64_t ldy) {
    __m256 acc[MR][NT];
    static_for<MR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA {
            acc[i][t] = first ? _mm256_setzero_ps() : _mm256_load_ps(cacc + (i * kNC + t) * 8);
        });
    });
    auto step = [&](const float* ws, __m256 (&xv)[NT]) AI_LAMBDA {
        static_for<MR>([&](auto i) AI_LAMBDA {
            const __m256 wv = _mm256_load_ps(ws + 8 * i);
            static_for<NT>([&](auto t) AI_LAMBDA { acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]); });
        });
    };
    for (int64_t s = 0; s < steps; ++s) {
        __m256 xv[NT];
        static_for<NT>([&](auto t) AI_LAMBDA { xv[t] = _mm256_loadu_ps(x + t * ldx + 8 * s); });
        step(wp + 32 * s, xv);
    }
    if (tail > 0) {
        const __m256i m = tail_mask(tail);
        __m256 xv[NT];
        static_for<NT>([&](auto t) AI_LAMBDA { xv[t] = _mm256_maskload_ps(x + t * ldx + 8 * steps, m); });
        step(wp + 32 * steps, xv);
    }
    static_for<MR>([&](auto i) AI_LAMBDA {
        static_for<NT>([&](auto t) AI_LAMBDA {
            if (last)
                y[t * ldy + i] = hsum8(acc[i][t]);
            else
                _mm256_store_ps(cacc + (i * kNC + t) * 8, acc[i][t]);
        });
    });
}

using TileFn = void (*)(const float*, int64_t, int, const float*, int64_t, float*, bool, bool, float*, int64_t);

template <int MR>
TileFn tile_for_nt(int nt) {
    return nt == 3 ? tile<MR, 3> : nt == 2 ? tile<MR, 2> : tile<MR, 1>;
}
TileFn tile_for(int mr, int nt) {
    switch (mr) {
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
    float* panel = thread_scratch(1, static_cast<size_t>(kPanelSteps) * 32);
    float* cacc = thread_scratch(2, static_cast<size_t>(kMC) * kNC * 8);
    for (int64_t rp = r0; rp < r1; rp += kMC) {
        const int mc = static_cast<int>(min64(kMC, r1 - rp));
        for (int64_t tb = 0; tb < n; tb += kNC) {
            const int64_t nc = min64(kNC, n - tb);
            for (int64_t b0 = 0;; b0 += kBlocksPerKC) {
                const int64_t b1 = min64(nblk, b0 + kBlocksPerKC);
                const bool first = b0 == 0, last = b1 == nblk;
                const int tail = last ? ktail : 0;
                const int64_t steps = (b1 - b0) * (D::QK / 8);
                for (int g = 0; 4 * g < mc; ++g) {
                    const int mr = static_cast<int>(min64(4, mc - 4 * g));
                    decode_panel<D>(base + (rp + 4 * g) * rb, rb, mr, b0, b1, tail, panel);
                    // Prefetch the weights the next decode_panel reads (next row group, same k
                    // block; after the last group, the first group's next k block): with few
                    // tokens the GEMM streams weights from memory in short bursts.
                    if (4 * (g + 1) < mc)
                        prefetch_rows(base + (rp + 4 * g + 4) * rb + b0 * D::BYTES, rb,
                                      static_cast<int>(min64(4, mc - 4 * g - 4)), (b1 - b0) * D::BYTES);
                    else if (!last)
                        prefetch_rows(base + rp * rb + b1 * D::BYTES, rb, static_cast<int>(min64(4, mc)),
                                      (min64(nblk, b1 + kBlocksPerKC) - b1) * D::BYTES);
                    const TileFn t3 = tile_for(mr, 3);
                    for (int64_t t0 = 0, nt; t0 < nc; t0 += nt) {
                        // groups of 3 tokens; 4 left -> 2 + 2 (a 1-token tile has 4 FMA chains
                        // for 5 loads per step: latency and load bound)
                        nt = nc - t0 == 4 ? 2 : min64(3, nc - t0);
                        const TileFn fn = nt == 3 ? t3 : tile_for(mr, static_cast<int>(nt));
                        fn(panel, steps, tail, x + (tb + t0) * ldx + b0 * D::QK, ldx, cacc + ((4 * g) * kNC + t0) * 8,
                           first, last, y + (tb + t0) * ldy + rp + 4 * g, ldy);
                    }
                }
                if (last) break;
            }
        }
    }
}

template <class D>
void run(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy,
         int64_t n) {
    if (n <= gemv_max_tokens(w.type))
        gemv<D>(w, r0, r1, x, ldx, y, ldy, n);
    else
        gemm<D>(w, r0, r1, x, ldx, y, ldy, n);
}

}  // namespace

void matmul_block_avx2(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                       int64_t ldy, int64_t n) {
    if (!with_decoder(w.type, [&](auto d) { run<decltype(d)>(w, r0, r1, x, ldx, y, ldy, n); }))
        matmul_block_scalar(w, r0, r1, x, ldx, y, ldy, n);  // unreachable: prepare() checks
}

}  // namespace pipelm::kernels::detail

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
