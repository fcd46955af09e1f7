// The device-neutral ops a model is written in (runtime/model/glm4.cc), and what a device must
// provide to run them: CpuBackend (backend_cpu.cc, over kernels/) and CudaBackend
// (backend_cuda.cc, over kernels/cuda/, built as the run-time module libpipelm_cuda.so).
//
// Memory: every `float*` an op takes is the backend's memory (host memory for the CPU, device
// memory for CUDA), obtained from scratch() or upload(). Host data enters only through
// upload()/embed() arguments and leaves through download(). Ops are issued in order; a backend
// may run them asynchronously (CUDA: one stream) until download() or finish().
//
// Numerics: each op computes what its kernels/ops.h or kernels/matmul.h contract says, with FP32
// activations; matmul takes the accumulation precision the architecture's policy gives that
// weight (runtime/model/arch.cc). A backend that cannot honour a precision accumulates wider
// (the CPU accumulates in FP32, which satisfies every policy).
//
// Errors: Error{kOutOfMemory} naming the device and what the bytes were for. Non-finite
// activations are reported (check_finite, finish) for the model to name the stage and layer.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/attention_heads.h"
#include "kernels/matmul.h"
#include "runtime/base/ggml_types.h"
#include "runtime/model/arch.h"

namespace pipelm::model {

struct Batch;

// A weight prepared by a backend (CPU: kernels::Matrix over the mapped file, maybe repacked;
// CUDA: a device copy in the stored type). Opaque to the model.
class BackendWeight {
public:
    virtual ~BackendWeight() = default;
    // True when the backend keeps its own copy (repacked, or on the device): the loader may then
    // release the file's pages.
    virtual bool copied() const = 0;
};

enum class WeightUse { kMatmul, kEmbedding, kBoth };

// The shape of what one stage keeps: its layers' KV cache and the RoPE table.
struct BackendShape {
    int stage = 0;          // for messages
    int first_layer = 0;    // model layer of local layer 0 (for messages)
    int n_layers = 0;       // layers of this stage (KV cache)
    int n_ctx = 0;          // KV rows per sequence
    int n_seq = 1;          // sequence slots
    int n_head = 0, n_head_kv = 0, head_dim = 0, n_rot = 0;
    float rope_base = 10000.f;
    GgmlType cache_type_k = GgmlType::kF32;
    GgmlType cache_type_v = GgmlType::kF32;
    int64_t kv_dim() const { return static_cast<int64_t>(n_head_kv) * head_dim; }
    int64_t q_dim() const { return static_cast<int64_t>(n_head) * head_dim; }
    // The query side of attention over n tokens (rows of q_dim() values, scale 1/sqrt(head_dim)).
    kernels::AttentionHeads heads(const float* q, float* out, int64_t n) const {
        kernels::AttentionHeads a;
        a.q = q;
        a.ldq = q_dim();
        a.out = out;
        a.ldo = q_dim();
        a.n_tokens = n;
        a.n_head = n_head;
        a.n_head_kv = n_head_kv;
        a.head_dim = head_dim;
        a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        return a;
    }
};

// What one stage will hold and compute, known before any weight is read: a device backend checks
// it against its free memory and refuses up front, naming each part.
struct BackendPlan {
    BackendShape shape;
    std::vector<kernels::WeightView> matrices;  // every matmul/embedding weight of the stage, as stored
    uint64_t vector_bytes = 0;                  // norms and biases (F32 on the device)
    int64_t max_tokens = 512;                   // tokens per forward (--ubatch)
    int64_t scratch_floats_per_token = 0;       // activations of one token through a layer
    int64_t n_vocab = 0;                        // logits per row; 0 without the lm_head
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string device() const = 0;  // "cpu", "cuda:0"

    // ---- load time ----------------------------------------------------------------------------
    // A matmul and/or embedding weight as stored (`name` for messages). The view's memory (the
    // mapped file) outlives the backend. A backend that copies the weight calls `rows_copied`
    // (when set) as rows [0, row_end) of the copy are made, so that the stage can drop those
    // rows' file pages while it copies the rest: loading then holds one copy of a weight plus a
    // step, not two (the lm_head of GLM-4-32B is 764 MB in Q6_K).
    using RowsCopied = std::function<void(int64_t row_end)>;
    virtual std::unique_ptr<BackendWeight> matrix(const kernels::WeightView& w, WeightUse use, const std::string& name,
                                                  const RowsCopied& rows_copied) = 0;
    // A copy of n floats (norm weights, biases) in the backend's memory; valid for its lifetime.
    virtual const float* vector(const float* host, int64_t n, const std::string& name) = 0;
    // Called once, before the weights: checks that the plan fits (Error{kOutOfMemory} naming the
    // device, each part and the fixes) and allocates the KV cache and the RoPE table.
    virtual void reserve(const BackendPlan& p) = 0;
    virtual uint64_t kv_bytes() const = 0;

    // ---- memory of a forward pass ---------------------------------------------------------------
    // Scratch buffer number `slot` with room for n floats (grown as needed; contents are not kept
    // across a growth). Valid until the next scratch() call for the same slot.
    virtual float* scratch(int slot, int64_t n, const char* what) = 0;
    // The backend's copy of n host floats (CPU: `host` itself, written through only when the
    // caller's buffer is writable). Uses scratch slot `slot`.
    virtual float* upload(const float* host, int64_t n, int slot) = 0;
    // Where an op should write n floats that end in `host` (CPU: `host` itself; else scratch `slot`).
    virtual float* output_buffer(float* host, int64_t n, int slot) = 0;
    // host[0..n) = x[0..n) (CPU: a copy only when they differ); waits for the ops before it.
    virtual void download(const float* x, float* host, int64_t n) = 0;
    // The positions and sequence slots of the batch the next ops run on (rope, kv_store, attention).
    virtual void set_batch(const Batch& b) = 0;
    // Waits for every op issued; returns the first local layer check_finite() flagged, or -1.
    virtual int finish() = 0;

    // ---- ops (kernels/ops.h and kernels/matmul.h give the exact contracts) ----------------------
    // x[t][:] = row ids[t] of `table` (host ids, checked by the caller), n_embd values each.
    virtual void embed(const BackendWeight& table, const int32_t* ids, int64_t n, int64_t n_embd, float* x) = 0;
    // y[r] = rms_norm(x[r]) * w (accumulate = false) or y[r] += rms_norm(x[r]) * w (accumulate =
    // true, the same rounding as the norm followed by add_inplace; x may then be overwritten).
    // Rows of n values, contiguous (ld = n).
    virtual void rms_norm(float* x, const float* w, float* y, int64_t n_rows, int64_t n, float eps,
                          bool accumulate) = 0;
    // y[t * ldy + r] = Σ_c W[r][c] · x[t * ldx + c], accumulated in at least `acc`.
    struct MatmulOut {
        const BackendWeight* w = nullptr;
        float* y = nullptr;
        int64_t ldy = 0;
    };
    // Several weights of the same input (Q, K, V): each output equals matmul() of its weight alone.
    virtual void matmul(const MatmulOut* outs, int n_outs, const float* x, int64_t ldx, int64_t n_tokens,
                        Precision acc) = 0;
    // x[r][i] += bias[i], rows of n values (row stride ld).
    virtual void add_bias(float* x, int64_t ld, const float* bias, int64_t n_rows, int64_t n) = 0;
    // NORM RoPE on the first n_rot dims of each of n_heads heads of x (row stride ld), at the
    // batch positions.
    virtual void rope(float* x, int64_t ld, int64_t n_tokens, int n_heads) = 0;
    // Stores the batch's post-RoPE K and V rows (row stride kv_dim) in local layer `layer`'s cache.
    virtual void kv_store(int layer, const float* k, const float* v, int64_t n_tokens) = 0;
    // Causal GQA attention of the batch's queries q over local layer `layer`'s cache (kernels/ops.h).
    virtual void attention(int layer, const float* q, float* out, int64_t n_tokens, Precision kq,
                           Precision softmax_v) = 0;
    // out[t][i] = silu(gu[t][i]) * gu[t][n_ff + i].
    virtual void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff) = 0;
    // Whether x[0..n) holds a NaN/Inf after local layer `layer`: returns `layer` when known now
    // to be non-finite, else -1 (a device backend records it and finish() reports it).
    virtual int check_finite(const float* x, int64_t n, int layer) = 0;
};

}  // namespace pipelm::model
