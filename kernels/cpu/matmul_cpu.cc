// matmul / matmul_rows: argument checks, ISA dispatch, threading, and the scalar fallback.
//
// Threads split the rows of W (never k) in 16-row grains, a contiguous share each, and the
// per-ISA block kernel computes all n tokens of a chunk's rows. Prefill cuts the shares into
// chunks that idle threads may take over (ThreadPool::parallel_for_balanced); decode (up to 16
// tokens) runs each share as one chunk (see run_parts). Because every (r, t) follows the
// accumulation contract of matmul_internal.h, the result does not depend on the chunking, the
// thread count or n_tokens.
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
    static thread_local Buf bufs[5];
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

Matrix Matrix::prepare(const WeightView& w, const Options& opt) {
    check_row_length(w.type, w.cols);
    PIPELM_CHECK(w.rows >= 0, "matmul weight: negative row count ", w.rows);
    PIPELM_CHECK(w.row_bytes >= ggml_row_bytes(w.type, w.cols), "matmul weight: row_bytes ", w.row_bytes,
                 " is smaller than a ", ggml_type_name(w.type), " row of ", w.cols, " values (",
                 ggml_row_bytes(w.type, w.cols), " bytes)");
    PIPELM_CHECK(w.data != nullptr || w.rows == 0 || w.cols == 0, "matmul weight: null data");
    Matrix m;
    m.set_view(w);
    if (opt.repack_q8 && detail::packable_type(w.type) && w.cols % 32 == 0 && w.rows > 0 &&
        detail::isa_avx2(detail::active_isa())) {
        const detail::PackedWeight layout = detail::packed_layout(w.type, w.rows, w.cols);
        const size_t bytes = (layout.bytes + 63) / 64 * 64;
        void* mem = std::aligned_alloc(64, bytes);
        if (mem == nullptr)
            PIPELM_THROW(ErrorCode::kOutOfMemory, "matmul: cannot allocate ", bytes, " bytes to repack a ",
                         ggml_type_name(w.type), " weight; run with --act-quant none to read the file layout");
        std::shared_ptr<void> packed(mem, [](void* p) { std::free(p); });
        uint8_t* out = static_cast<uint8_t*>(mem);
        // Steps of whole 64-row groups (pack_rows takes any range of them) of about kReleaseStep
        // source bytes, each split over the pool; after each, the caller may drop those rows.
        const int64_t step = opt.rows_packed ? std::max<int64_t>(64, static_cast<int64_t>(kReleaseStep / w.row_bytes) / 64 * 64)
                                             : w.rows;
        for (int64_t s0 = 0; s0 < w.rows; s0 += step) {
            const int64_t s1 = std::min(w.rows, s0 + step);
            if (opt.pool != nullptr)
                opt.pool->parallel_for(s1 - s0, [&](int64_t r0, int64_t r1, int) { detail::pack_rows(w, layout, out, s0 + r0, s0 + r1); },
                                       64);
            else
                detail::pack_rows(w, layout, out, s0, s1);
            if (opt.rows_packed) opt.rows_packed(s1);
        }
        m.set_packed(std::move(packed), detail::kPackLanes);
    }
    return m;
}

bool act_quant_supported(GgmlType t) { return detail::q8_type_supported(t); }

namespace {

// The activations of one matmul call, plus their int8 form (ActQuant::kQ8) when a member of the
// call uses it: quantized once, on the calling thread (scratch slot 3; the pool only reads it).
struct Operand {
    const float* x = nullptr;
    int64_t ldx = 0, n = 0;
    bool has_q8 = false;
    detail::ActQ8 a;

    // Each token is quantized on its own (the same bits whichever thread does it); a batch of
    // many tokens is split over the pool (prefill: otherwise the other threads wait).
    void quantize(int64_t K, ThreadPool& pool) {
        const bool avx2 = detail::isa_avx2(detail::active_isa());
        const int64_t nb = K / 32, ldd = (nb + 7) / 8 * 8, ldq = ldd * 32;
        const size_t q_floats = static_cast<size_t>(n * ldq) / 4;
        float* buf = detail::thread_scratch(3, 2 * q_floats + static_cast<size_t>(3 * n * ldd));
        int8_t* qn = reinterpret_cast<int8_t*>(buf);
        int8_t* qi = reinterpret_cast<int8_t*>(buf + q_floats);
        float* d = buf + 2 * q_floats;
        float* s = d + n * ldd;
        int32_t* hs = reinterpret_cast<int32_t*>(s + n * ldd);
        auto tokens = [&](int64_t t0, int64_t t1, int) {
            for (int64_t t = t0; t < t1; ++t) {
                int8_t* qt = qn + t * ldq;
                if (avx2)
                    detail::quantize_act_q8_avx2(x + t * ldx, K, ldd, qt, d + t * ldd, s + t * ldd, hs + t * ldd);
                else
                    detail::quantize_act_q8_scalar(x + t * ldx, K, ldd, qt, d + t * ldd, s + t * ldd, hs + t * ldd);
                std::memset(qt + K, 0, static_cast<size_t>(ldq - K));
                detail::interleave_act_q8(qt, K, ldd, qi + t * ldq);
            }
        };
        if (pool.size() > 1 && n * K >= (1 << 16))
            pool.parallel_for(n, tokens, std::max<int64_t>(1, (1 << 14) / K));
        else
            tokens(0, n, 0);
        a.hs = hs;
        a.q = qn;
        a.qi = qi;
        a.d = d;
        a.s = s;
        a.ldq = ldq;
        a.ldd = ldd;
        a.nb = nb;
        has_q8 = true;
    }
};

// Rows [r0, r1) of one weight, written to y (columns r0..r1-1).
struct Part {
    const WeightView* v = nullptr;
    const Matrix* m = nullptr;  // for its repacked copy
    int64_t r0 = 0, r1 = 0;
    float* y = nullptr;
    int64_t ldy = 0;
    bool q8 = false;  // integer kernel with the operand's int8 activations
};

void run_rows(const Part& p, int64_t r0, int64_t r1, const Operand& op) {
    const detail::Isa isa = detail::active_isa();
    const bool avx2 = detail::isa_avx2(isa);
    if (p.q8 && avx2 && p.m->packed_format() == detail::kPackLanes) {
        detail::PackedWeight layout = detail::packed_layout(p.v->type, p.v->rows, p.v->cols);
        layout.data = static_cast<const uint8_t*>(p.m->packed().get());
        if (isa == detail::Isa::kAvx512Vnni)
            detail::matmul_q8_packed_avx512vnni(layout, r0, r1, op.a, p.y, p.ldy, op.n);
        else if (isa == detail::Isa::kAvx2Vnni)
            detail::matmul_q8_packed_avxvnni(layout, r0, r1, op.a, p.y, p.ldy, op.n);
        else
            detail::matmul_q8_packed_avx2(layout, r0, r1, op.a, p.y, p.ldy, op.n);
    } else if (p.q8)
        (avx2 ? detail::matmul_q8_block_avx2 : detail::matmul_q8_block_scalar)(*p.v, r0, r1, op.a, p.y, p.ldy, op.n);
    else if (detail::isa_avx512(isa))
        detail::matmul_block_avx512(*p.v, r0, r1, op.x, op.ldx, p.y, p.ldy, op.n);
    else
        (avx2 ? detail::matmul_block_avx2 : detail::matmul_block_scalar)(*p.v, r0, r1, op.x, op.ldx, p.y, p.ldy,
                                                                          op.n);
}

// The rows one weight's kernels stream: the repacked copy when there is one (it exists only when
// the weight is used with kQ8 on a CPU that reads it), else the file's rows. Both are rows of a
// fixed size in row order.
const char* row_stream(const Matrix& m, size_t& row_bytes) {
    const WeightView& v = m.view();
    if (m.packed() != nullptr) {
        row_bytes = detail::packed_layout(v.type, v.rows, v.cols).row_bytes;
        return static_cast<const char*>(m.packed().get());
    }
    row_bytes = v.row_bytes;
    return static_cast<const char*>(v.data);
}

// Rows per grain of run_parts' split (the pool's shares are whole grains).
constexpr int64_t kRowGrain = 16;
// Calls of at most this many tokens run each thread's share as one chunk (run_parts).
constexpr int64_t kDecodeMaxTokens = 16;

// NextWeights: thread t's share of the next region starts at the pool's share_begin in the
// concatenation of the next call's rows (run_parts below splits them so).
void set_next_prefetch(const NextWeights& next, ThreadPool& pool) {
    int64_t rows = 0;
    for (int i = 0; i < next.n; ++i) rows += next.w[i]->rows();
    for (int t = 0; t < pool.size(); ++t) {
        pool.set_idle_prefetch(t, nullptr, 0);
        int64_t r = pool.share_begin(rows, kRowGrain, t);
        if (r >= rows) continue;
        for (int i = 0; i < next.n; ++i) {
            const int64_t len = next.w[i]->rows();
            if (r >= len) {
                r -= len;
                continue;
            }
            size_t row_bytes = 0;
            const char* base = row_stream(*next.w[i], row_bytes);
            const size_t left = static_cast<size_t>(len - r) * row_bytes;
            pool.set_idle_prefetch(t, base + static_cast<size_t>(r) * row_bytes, std::min(kNextPrefetchBytes, left));
            break;
        }
    }
}

// All parts in one parallel region: the threads split the concatenation of the parts' rows (in
// kRowGrain-row grains), so several small weights (Q, K, V) cost one pool wake-up instead of three.
// Small products are not worth waking the pool (results do not depend on the split).
void run_parts(const Part* parts, int n_parts, const Operand& op, ThreadPool& pool, const NextWeights* next) {
    int64_t rows = 0;
    double work = 0;
    for (int i = 0; i < n_parts; ++i) {
        rows += parts[i].r1 - parts[i].r0;
        work += static_cast<double>(parts[i].r1 - parts[i].r0) * static_cast<double>(parts[i].v->cols) *
                static_cast<double>(op.n);
    }
    if (pool.size() == 1 || work < 65536.0 || rows <= kRowGrain) {
        for (int i = 0; i < n_parts; ++i) run_rows(parts[i], parts[i].r0, parts[i].r1, op);
        return;
    }
    if (next != nullptr && next->n > 0) set_next_prefetch(*next, pool);
    auto chunk = [&](int64_t b, int64_t e, int) {
        int64_t off = 0;  // first row of part i in the concatenation
        for (int i = 0; i < n_parts && b < e; ++i) {
            const Part& p = parts[i];
            const int64_t len = p.r1 - p.r0;
            if (b < off + len) {
                const int64_t stop = std::min(e, off + len);
                run_rows(p, p.r0 + (b - off), p.r0 + (stop - off), op);
                b = stop;
            }
            off += len;
        }
    };
    // Decode-sized calls (up to kDecodeMaxTokens tokens: the GEMVs and the few-token kernels, int8
    // or float) read each weight once, and a chunk's rows are new memory streams (4 or 2) whose
    // first reads wait on DRAM: a balanced share is ~6 chunks (halves down to 16 rows), so they
    // take each share whole. Zen 5 guest, 2 threads, static / balanced: tg64 Q4_K_M 1.05-1.07 and
    // Q8_0 0.98-1.14 (int8, 1 token), F16 1.01-1.07 (6 pairs, fast memory; no change in the slow
    // state), Q4_K_M with 8 sequences 1.02-1.04, with 16 1.01-1.05 (static up to 16 against up to
    // 8; F16 there 0.98-1.01, the avx2 level's GEMM 0.99-1.07: no loss); with a `yes` process
    // taking half the CPU no worse (Q4_K_M 1.02, 1.04). At 32 sequences (1.0 +- 0.03) and in
    // prefill (compute-bound, long chunks) the stealing stays.
    if (op.n <= kDecodeMaxTokens)
        pool.parallel_for(rows, chunk, kRowGrain);
    else
        pool.parallel_for_balanced(rows, chunk, kRowGrain);
}

bool uses_q8(const WeightView& v, ActQuant aq) {
    return aq == ActQuant::kQ8 && detail::q8_type_supported(v.type) && v.cols % 32 == 0;
}

void check_call(const WeightView& v, int64_t r0, int64_t r1, int64_t ldx, int64_t ldy, int64_t n_tokens,
                const char* what) {
    PIPELM_CHECK(0 <= r0 && r0 <= r1 && r1 <= v.rows, what, ": row range [", r0, ", ", r1,
                 ") outside a weight of ", v.rows, " rows");
    PIPELM_CHECK(n_tokens >= 0, what, ": negative n_tokens ", n_tokens);
    PIPELM_CHECK(n_tokens <= 1 || ldx >= v.cols, what, ": ldx ", ldx, " < cols ", v.cols);
    PIPELM_CHECK(n_tokens <= 1 || ldy >= r1, what, ": ldy ", ldy, " < ", r1, " output columns");
}

}  // namespace

void matmul_rows(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy,
                 int64_t n_tokens, ThreadPool& pool, ActQuant aq, const NextWeights* next) {
    const WeightView& v = w.view();
    check_call(v, r0, r1, ldx, ldy, n_tokens, "matmul");
    if (r0 == r1 || n_tokens == 0) return;
    if (v.cols == 0) {
        for (int64_t t = 0; t < n_tokens; ++t)
            for (int64_t r = r0; r < r1; ++r) y[t * ldy + r] = 0.f;
        return;
    }
    Operand op;
    op.x = x;
    op.ldx = ldx;
    op.n = n_tokens;
    Part p;
    p.v = &v;
    p.m = &w;
    p.r0 = r0;
    p.r1 = r1;
    p.y = y;
    p.ldy = ldy;
    p.q8 = uses_q8(v, aq);
    if (p.q8) op.quantize(v.cols, pool);
    run_parts(&p, 1, op, pool, next);
}

void matmul_group(const MatmulOut* outs, int n_outs, const float* x, int64_t ldx, int64_t n_tokens,
                  ThreadPool& pool, ActQuant aq, const NextWeights* next) {
    PIPELM_CHECK(n_outs >= 0 && n_outs <= kMaxGroup, "matmul_group: ", n_outs, " weights (at most ", kMaxGroup, ")");
    if (n_outs == 0 || n_tokens == 0) return;
    const int64_t K = outs[0].w->cols();
    Part parts[kMaxGroup];
    bool any_q8 = false;
    for (int i = 0; i < n_outs; ++i) {
        const WeightView& v = outs[i].w->view();
        PIPELM_CHECK(v.cols == K, "matmul_group: weight ", i, " has ", v.cols, " columns, weight 0 has ", K);
        check_call(v, 0, v.rows, ldx, outs[i].ldy, n_tokens, "matmul_group");
        parts[i].v = &v;
        parts[i].m = outs[i].w;
        parts[i].r0 = 0;
        parts[i].r1 = v.rows;
        parts[i].y = outs[i].y;
        parts[i].ldy = outs[i].ldy;
        parts[i].q8 = uses_q8(v, aq);
        any_q8 = any_q8 || parts[i].q8;
    }
    if (K == 0) {
        for (int i = 0; i < n_outs; ++i)
            for (int64_t t = 0; t < n_tokens; ++t)
                for (int64_t r = 0; r < parts[i].r1; ++r) parts[i].y[t * parts[i].ldy + r] = 0.f;
        return;
    }
    Operand op;
    op.x = x;
    op.ldx = ldx;
    op.n = n_tokens;
    if (any_q8) op.quantize(K, pool);
    run_parts(parts, n_outs, op, pool, next);
}

void matmul(const Matrix& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n_tokens,
            ThreadPool& pool, ActQuant aq, const NextWeights* next) {
    matmul_rows(w, 0, w.rows(), x, ldx, y, ldy, n_tokens, pool, aq, next);
}

}  // namespace pipelm::kernels
