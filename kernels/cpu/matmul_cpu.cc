// matmul / matmul_rows: argument checks, ISA dispatch, threading, and the scalar fallback.
//
// Threads split the rows of W (never k): ThreadPool::parallel_for hands each thread one
// contiguous, 16-row-aligned chunk, and the per-ISA block kernel computes all n tokens of its
// rows. Because every (r, t) follows the accumulation contract of matmul_internal.h, the
// result does not depend on the chunking, the thread count or n_tokens.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/matmul_q8.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"

namespace pipelm::kernels {
namespace detail {

float* thread_scratch(int slot, size_t n_floats) {
    struct Buf {
        float* p = nullptr;
        size_t n = 0;
        ~Buf() { std::free(p); }
    };
    static thread_local Buf bufs[4];
    Buf& b = bufs[slot];
    if (b.n < n_floats) {
        std::free(b.p);
        const size_t bytes = ((n_floats * sizeof(float)) + 63) / 64 * 64;
        b.p = static_cast<float*>(std::aligned_alloc(64, bytes));
        if (b.p == nullptr)
            PIPELM_THROW(ErrorCode::kOutOfMemory, "matmul: cannot allocate ", bytes, " bytes of scratch");
        b.n = n_floats;
    }
    return b.p;
}

// Scalar fallback. Shapes: W rows [r0, r1) of `cols` values (dequantized row by row into a
// zero-padded f32 buffer), x[t*ldx + c], y[t*ldy + r]. Accumulation: the 8-lane FMA contract of
// matmul_internal.h with std::fma (correctly rounded, like vfmadd), so the bits equal the AVX2
// path's.
void matmul_block_scalar(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                         int64_t ldy, int64_t n) {
    const int64_t K = w.cols;
    const int64_t steps = (K + 7) / 8;
    float* wrow = thread_scratch(0, static_cast<size_t>(steps * 8));
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    for (int64_t r = r0; r < r1; ++r) {
        dequantize_row(w.type, base + r * w.row_bytes, wrow, K);
        for (int64_t k = K; k < steps * 8; ++k) wrow[k] = 0.f;
        for (int64_t t = 0; t < n; ++t) {
            const float* xt = x + t * ldx;
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t s = 0; s < steps; ++s) {
                for (int l = 0; l < 8; ++l) {
                    const int64_t k = s * 8 + l;
                    const float xv = k < K ? xt[k] : 0.f;
                    acc[l] = std::fma(wrow[k], xv, acc[l]);
                }
            }
            y[t * ldy + r] = reduce8(acc);
        }
    }
}

}  // namespace detail

Matrix Matrix::prepare(const WeightView& w) {
    check_row_length(w.type, w.cols);
    PIPELM_CHECK(w.rows >= 0, "matmul weight: negative row count ", w.rows);
    PIPELM_CHECK(w.row_bytes >= ggml_row_bytes(w.type, w.cols), "matmul weight: row_bytes ", w.row_bytes,
                 " is smaller than a ", ggml_type_name(w.type), " row of ", w.cols, " values (",
                 ggml_row_bytes(w.type, w.cols), " bytes)");
    PIPELM_CHECK(w.data != nullptr || w.rows == 0 || w.cols == 0, "matmul weight: null data");
    Matrix m;
    m.set_view(w);  // every kernel reads the GGUF layout directly: no repacked copy
    return m;
}

bool act_quant_supported(GgmlType t) { return detail::q8_type_supported(t); }

namespace {

// ActQuant::kQ8: quantizes the n tokens once (on the calling thread, into its scratch slot 3;
// the pool's threads only read it), then splits the rows like the exact path.
void matmul_rows_q8(const WeightView& v, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                    int64_t ldy, int64_t n_tokens, ThreadPool& pool) {
    const bool avx2 = detail::active_isa() == detail::Isa::kAvx2;
    const int64_t K = v.cols, nb = K / 32, ldd = (nb + 7) / 8 * 8, ldq = ldd * 32;
    const size_t q_floats = static_cast<size_t>(n_tokens * ldq) / 4;
    float* buf = detail::thread_scratch(3, 2 * q_floats + static_cast<size_t>(2 * n_tokens * ldd));
    int8_t* qn = reinterpret_cast<int8_t*>(buf);
    int8_t* qi = reinterpret_cast<int8_t*>(buf + q_floats);
    float* d = buf + 2 * q_floats;
    float* s = d + n_tokens * ldd;
    for (int64_t t = 0; t < n_tokens; ++t) {
        int8_t* qt = qn + t * ldq;
        if (avx2)
            detail::quantize_act_q8_avx2(x + t * ldx, K, ldd, qt, d + t * ldd, s + t * ldd);
        else
            detail::quantize_act_q8_scalar(x + t * ldx, K, ldd, qt, d + t * ldd, s + t * ldd);
        std::memset(qt + K, 0, static_cast<size_t>(ldq - K));
        detail::interleave_act_q8(qt, K, ldd, qi + t * ldq);
    }
    detail::ActQ8 a;
    a.q = qn;
    a.qi = qi;
    a.d = d;
    a.s = s;
    a.ldq = ldq;
    a.ldd = ldd;
    a.nb = nb;
    const auto block = avx2 ? detail::matmul_q8_block_avx2 : detail::matmul_q8_block_scalar;
    const int64_t rows = r1 - r0;
    const double work = static_cast<double>(rows) * static_cast<double>(K) * static_cast<double>(n_tokens);
    if (pool.size() == 1 || work < 65536.0 || rows <= 16) {
        block(v, r0, r1, a, y, ldy, n_tokens);
        return;
    }
    pool.parallel_for(
        rows, [&](int64_t b, int64_t e, int) { block(v, r0 + b, r0 + e, a, y, ldy, n_tokens); }, 16);
}

}  // namespace

void matmul_rows(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy,
                 int64_t n_tokens, ThreadPool& pool, ActQuant aq) {
    const WeightView& v = w.view();
    PIPELM_CHECK(0 <= r0 && r0 <= r1 && r1 <= v.rows, "matmul_rows: row range [", r0, ", ", r1,
                 ") outside a weight of ", v.rows, " rows");
    PIPELM_CHECK(n_tokens >= 0, "matmul: negative n_tokens ", n_tokens);
    if (r0 == r1 || n_tokens == 0) return;
    PIPELM_CHECK(n_tokens == 1 || ldx >= v.cols, "matmul: ldx ", ldx, " < cols ", v.cols);
    PIPELM_CHECK(n_tokens == 1 || ldy >= r1, "matmul: ldy ", ldy, " < ", r1, " output columns");
    if (v.cols == 0) {
        for (int64_t t = 0; t < n_tokens; ++t)
            for (int64_t r = r0; r < r1; ++r) y[t * ldy + r] = 0.f;
        return;
    }
    if (aq == ActQuant::kQ8 && detail::q8_type_supported(v.type) && v.cols % 32 == 0) {
        matmul_rows_q8(v, r0, r1, x, ldx, y, ldy, n_tokens, pool);
        return;
    }
    const auto block = detail::active_isa() == detail::Isa::kAvx2 ? detail::matmul_block_avx2
                                                                   : detail::matmul_block_scalar;
    const int64_t rows = r1 - r0;
    // Small products are not worth waking the pool (results do not depend on the split).
    const double work = static_cast<double>(rows) * static_cast<double>(v.cols) * static_cast<double>(n_tokens);
    if (pool.size() == 1 || work < 65536.0 || rows <= 16) {
        block(v, r0, r1, x, ldx, y, ldy, n_tokens);
        return;
    }
    pool.parallel_for(
        rows, [&](int64_t b, int64_t e, int) { block(v, r0 + b, r0 + e, x, ldx, y, ldy, n_tokens); }, 16);
}

void matmul(const Matrix& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n_tokens,
            ThreadPool& pool, ActQuant aq) {
    matmul_rows(w, 0, w.rows(), x, ldx, y, ldy, n_tokens, pool, aq);
}

}  // namespace pipelm::kernels
