// Weight matrix times activations on the CPU: y = x · Wᵀ with FP32 activations and FP32
// accumulation, for every weight type of quant.h.
//
// Contract that split invariance and batch invariance rest on: the value of y[t][r] depends
// only on row r of W and row t of x, never on n_tokens, the thread count or which other rows
// share a tile. (Every code path accumulates (r, t) in the same order.)
//
// The order, on every CPU path (AVX2 and the scalar fallback give identical bits): w[k] is the
// exact dequantize_row() value; eight float lanes start at +0 and lane l accumulates
// fma(w[k], x[k], lane) for k ≡ l (mod 8) in increasing k (a partial last group of 8 sees
// w = x = 0); then y = ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
// Threads split the rows of W, never k.
//
// ActQuant::kQ8 (opt-in, faster, not exact): the activations are first rounded, per token and
// per block of 32 values (blocks b = 0 .. cols/32-1), to int8: d_b = amax_b / 127 (float32
// division; amax_b = max |x|), q = round-half-even(x / d_b) clamped to [-127, 127], q = 0 when
// d_b = 0, and s_b = fl(d_b * Σ q) (only used by weight types with a min/offset term). The
// weights are never rounded: each 32-value weight block b is read exactly as
// w[k] = f_b * m_k * v_k (+ mn_b for types with a min), with integers v_k, m_k and float f_b,
// mn_b taken from the block format (Q8_0: f = d, m = 1, v = q; Q4_K: f = d, m = sc(s),
// v = q, mn = -dmin*m(s); Q6_K: f = d, m = sc of the 16-value half, v = q - 32; IQ4_XS:
// f = d, m = ls - 32, v = kvalues[q]; ...). Determinism contract for kQ8, per (row r, token t):
// eight float lanes start at +0; for each group G of 8 consecutive blocks (the last group may
// be partial; its missing blocks count as all-zero), in increasing G, lane j stands for block
// b = 8G + j:
//   1. types with a min only: lane j = fma(mn_b, s_b, lane j);
//   2. lane j = fma(float(S_b), fl(f_b * d_b), lane j), S_b = Σ_{k in block b} m_k v_k q_k the
//      exact int32 dot product (float(S_b) is exact: |S_b| < 2^24);
// then y = ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). As for kNone, the result depends
// only on (row r of W, row t of x): every n_tokens (GEMV or GEMM), thread count, row split and
// ISA (scalar reference, AVX2, AVX-VNNI, AVX-512, AVX-512-VNNI) gives the same bits. Expected
// error against exact f32 activations: |Δy| <= Σ_k |w_k| amax_b(k) / 254 (half an int8 step per
// value), typically ~0.5% of |y| RMS; the float arithmetic on top adds only ~(cols/32) ulp-level
// roundings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "runtime/base/ggml_types.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::kernels {

// A weight as it lies in the GGUF file: `rows` rows of `cols` elements, row-major
// (ggml ne = {cols, rows}), each row ggml_row_bytes(type, cols) bytes.
struct WeightView {
    GgmlType type = GgmlType::kF32;
    const void* data = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
    size_t row_bytes = 0;
};

// A weight ready for matmul. It may hold a repacked copy (layout chosen at load time for the
// CPU it runs on) or just point at the mapped file data; `view()` always gives the original.
class Matrix {
public:
    Matrix() = default;
    // Prepares `w` for this CPU (may repack). The view's memory must outlive the Matrix: the
    // exact (kNone) and scalar paths always read the original layout.
    //   repack_q8: the weight will be used with ActQuant::kQ8 on this CPU. Q8_0, Q4_0, IQ4_NL and
    //   IQ4_XS weights are then copied once into the lane order of the integer kernels (same
    //   bytes; kernels/cpu/matmul_q8.h), which the AVX2 kQ8 path reads instead of the file
    //   layout: same results, faster decode.
    //   rows_packed: when set, called on the calling thread each time rows [0, row_end) of the
    //   view have been repacked, in steps of about kReleaseStep source bytes: the caller may drop
    //   those rows' pages (a mapped file's pages), so that loading holds one copy of a weight plus
    //   a step rather than two copies of it. Never called when nothing is repacked.
    struct Options {
        bool repack_q8 = false;
        ThreadPool* pool = nullptr;  // repacks in parallel when given
        std::function<void(int64_t row_end)> rows_packed;
    };
    static constexpr size_t kReleaseStep = size_t{8} << 20;
    static Matrix prepare(const WeightView& w) { return prepare(w, Options()); }
    static Matrix prepare(const WeightView& w, const Options& opt);

    const WeightView& view() const { return view_; }
    int64_t rows() const { return view_.rows; }
    int64_t cols() const { return view_.cols; }
    GgmlType type() const { return view_.type; }
    // Opaque repacked data (nullptr when none); used by the matmul implementation only.
    const std::shared_ptr<void>& packed() const { return packed_; }
    int packed_format() const { return packed_format_; }

    // Implementation hooks for kernels/cpu.
    void set_packed(std::shared_ptr<void> p, int format) {
        packed_ = std::move(p);
        packed_format_ = format;
    }
    void set_view(const WeightView& v) { view_ = v; }

private:
    WeightView view_;
    std::shared_ptr<void> packed_;
    int packed_format_ = 0;
};

// How matmul treats the activations. kNone: f32 activations, exact (the contract above).
// kQ8: each token's activations are rounded per block of 32 values to int8 with one float32 scale
// (amax/127) and multiplied with integer dot products (as llama.cpp does on CPUs); for weight types
// without such a kernel (and when cols % 32 != 0) matmul falls back to kNone. Results still depend
// only on (row of W, row of x): batch-, thread- and split-invariant.
enum class ActQuant { kNone = 0, kQ8 = 1 };

constexpr int kMaxGroup = 4;

// The weights the caller will multiply next (its next matmul call's, in order), a hint for the
// memory stream: while this call's threads wait (at the end of its parallel region, and a worker
// until the next region starts), each reads the start of its share of these weights into its L2
// cache, up to kNextPrefetchBytes. Never changes a result.
struct NextWeights {
    const Matrix* w[kMaxGroup] = {};
    int n = 0;
};
constexpr size_t kNextPrefetchBytes = size_t{256} << 10;

// y[t * ldy + r] = Σ_c W[r][c] · x[t * ldx + c]   for t < n_tokens, r < W.rows().
void matmul(const Matrix& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n_tokens,
            ThreadPool& pool, ActQuant aq = ActQuant::kNone, const NextWeights* next = nullptr);

// Same, for rows [r0, r1) of W only (y columns r0..r1-1). Used to split lm_head work.
void matmul_rows(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y,
                 int64_t ldy, int64_t n_tokens, ThreadPool& pool, ActQuant aq = ActQuant::kNone,
                 const NextWeights* next = nullptr);

// Several weights with the same number of columns times the same activations, in one parallel
// region (Q, K and V of a layer: one pool wake-up and, with kQ8, one activation quantization
// instead of three). y_i[t * ldy_i + r] = Σ_c W_i[r][c] · x[t * ldx + c]; each weight may have its
// own type; every value equals what matmul() gives for that weight alone.
struct MatmulOut {
    const Matrix* w = nullptr;
    float* y = nullptr;
    int64_t ldy = 0;
};
void matmul_group(const MatmulOut* outs, int n_outs, const float* x, int64_t ldx, int64_t n_tokens,
                  ThreadPool& pool, ActQuant aq = ActQuant::kNone, const NextWeights* next = nullptr);

// true when matmul has an integer kernel for this type (kQ8 is not a fallback for it)
bool act_quant_supported(GgmlType t);

// One-line description of the instruction set chosen at run time: "scalar", "avx2+fma+f16c",
// "avx2+avx-vnni", "avx512f/dq/bw/vl" or "avx512f/dq/bw/vl+vnni" (the best this CPU has, or
// $PIPELM_CPU_ISA when set to a level it has).
const char* cpu_isa_name();

// Overrides the run-time ISA choice (tests, benchmarks): "auto", "scalar", "avx2", "avx2vnni"
// (AVX-VNNI), "avx512" (F/DQ/BW/VL) or "avx512vnni". Returns false (and changes nothing) when
// this CPU cannot run it. Process-wide; not for use while another thread is inside matmul. Every
// ISA follows the accumulation contracts above (the exact int32 block sums are the same whatever
// instruction forms them; every float step is the same IEEE operation), so the scalar path and
// every SIMD path give the same bits: this never changes results, only speed.
bool force_cpu_isa(const char* name);

// Asks Linux for permission to use AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA)); true when granted. Harmless on CPUs without AMX (returns false).
bool request_amx();

}  // namespace pipelm::kernels
