// The CPU backend: the ops of backend.h over kernels/ (FP32 activations and accumulation; int8
// activations for quantized weights unless --act-quant none). Memory is host memory: upload() and
// output_buffer() hand back the caller's buffers, so a forward pass copies nothing.
#include "runtime/model/backend_cpu.h"

#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/stage.h"

namespace pipelm::model {
namespace {

class CpuWeight final : public BackendWeight {
public:
    explicit CpuWeight(kernels::Matrix m) : m_(std::move(m)) {}
    bool copied() const override { return m_.packed() != nullptr; }
    const kernels::Matrix& matrix() const { return m_; }
    // The weights of the matmul call that followed the last call led by this weight (see
    // CpuBackend::matmul); written and read by the backend's calling thread only.
    mutable kernels::NextWeights next;

private:
    kernels::Matrix m_;
};

const kernels::Matrix& mat(const BackendWeight* w) { return static_cast<const CpuWeight*>(w)->matrix(); }

class CpuBackend final : public Backend {
public:
    CpuBackend(ThreadPool& pool, kernels::ActQuant aq) : pool_(pool), aq_(aq) {}

    std::string device() const override { return "cpu"; }

    std::unique_ptr<BackendWeight> matrix(const kernels::WeightView& w, WeightUse use, const std::string&,
                                          const RowsCopied& rows_copied) override {
        if (use == WeightUse::kEmbedding) return std::make_unique<CpuWeight>(kernels::Matrix::prepare(w));
        kernels::Matrix::Options prep;
        prep.repack_q8 = aq_ == kernels::ActQuant::kQ8;
        prep.pool = &pool_;
        prep.rows_packed = rows_copied;
        return std::make_unique<CpuWeight>(kernels::Matrix::prepare(w, prep));
    }
    const float* vector(const float* host, int64_t, const std::string&) override { return host; }

    // The planner has checked --mem; the CPU checks only what its kernels need.
    void reserve(const BackendPlan& p) override {
        const BackendShape& s = p.shape;
        for (GgmlType t : {s.cache_type_k, s.cache_type_v})
            if (s.head_dim % ggml_type_info(t).block != 0)
                PIPELM_THROW(ErrorCode::kInvalidArgument, "KV cache type ", ggml_type_name(t), " needs head_dim (",
                             s.head_dim, ") to be a multiple of ", ggml_type_info(t).block, ": use f16 or f32");
        shape_ = s;
        kv_ = KvCache(s.n_layers, s.n_seq, s.n_ctx, s.kv_dim(), s.cache_type_k, s.cache_type_v);
        rope_cs_.resize(static_cast<size_t>(s.n_ctx) * s.n_rot);
        kernels::rope_table(rope_cs_.data(), s.n_ctx, s.n_rot, s.rope_base);
    }
    uint64_t kv_bytes() const override { return kv_.bytes(); }

    float* scratch(int slot, int64_t n, const char*) override {
        if (slot >= static_cast<int>(scratch_.size())) scratch_.resize(static_cast<size_t>(slot) + 1);
        std::vector<float>& v = scratch_[static_cast<size_t>(slot)];
        if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
        return v.data();
    }
    float* upload(const float* host, int64_t, int) override { return const_cast<float*>(host); }
    float* output_buffer(float* host, int64_t, int) override { return host; }
    void download(const float* x, float* host, int64_t n) override {
        if (x != host) std::memcpy(host, x, static_cast<size_t>(n) * sizeof(float));
    }
    void set_batch(const Batch& b) override {
        batch_ = b;
        k_rows_.resize(static_cast<size_t>(b.n_tokens));
        v_rows_.resize(static_cast<size_t>(b.n_tokens));
        n_kv_.resize(static_cast<size_t>(b.n_tokens));
    }
    int finish() override { return -1; }

    void embed(const BackendWeight& table, const int32_t* ids, int64_t n, int64_t n_embd, float* x) override {
        const kernels::WeightView& e = mat(&table).view();
        for (int64_t t = 0; t < n; ++t)
            kernels::dequantize_row(e.type, static_cast<const uint8_t*>(e.data) + e.row_bytes * ids[t], x + t * n_embd,
                                    n_embd);
    }
    void rms_norm(float* x, const float* w, float* y, int64_t n_rows, int64_t n, float eps, bool accumulate) override {
        if (!accumulate) {
            kernels::rms_norm(x, n, w, y, n, n_rows, n, eps, pool_);
            return;
        }
        kernels::rms_norm(x, n, w, x, n, n_rows, n, eps, pool_);
        kernels::add_inplace(y, x, n_rows * n);
    }
    // FP32 accumulation satisfies every precision policy. The next call's weights are a hint for
    // the memory stream (kernels::NextWeights): a forward pass multiplies its weights in the same
    // order every time, so the call that followed this one's last time is the guess (learned on the
    // first pass; a wrong guess costs some bandwidth, never a result).
    void matmul(const MatmulOut* outs, int n_outs, const float* x, int64_t ldx, int64_t n_tokens, Precision) override {
        PIPELM_CHECK(n_outs <= kernels::kMaxGroup, "matmul group of ", n_outs, " weights (at most ", kernels::kMaxGroup, ")");
        if (n_outs <= 0) return;
        const auto* lead = static_cast<const CpuWeight*>(outs[0].w);
        if (last_ != nullptr) {
            last_->next.n = n_outs;
            for (int i = 0; i < n_outs; ++i) last_->next.w[i] = &mat(outs[i].w);
        }
        last_ = lead;
        const kernels::NextWeights* next = lead->next.n > 0 ? &lead->next : nullptr;
        if (n_outs == 1) {
            kernels::matmul(mat(outs[0].w), x, ldx, outs[0].y, outs[0].ldy, n_tokens, pool_, aq_, next);
            return;
        }
        kernels::MatmulOut o[kernels::kMaxGroup];
        for (int i = 0; i < n_outs; ++i) o[i] = {&mat(outs[i].w), outs[i].y, outs[i].ldy};
        kernels::matmul_group(o, n_outs, x, ldx, n_tokens, pool_, aq_, next);
    }
    void add_bias(float* x, int64_t ld, const float* bias, int64_t n_rows, int64_t n) override {
        for (int64_t r = 0; r < n_rows; ++r) kernels::add_inplace(x + r * ld, bias, n);
    }
    void rope(float* x, int64_t ld, int64_t n_tokens, int n_heads) override {
        kernels::rope_norm(x, ld, n_tokens, n_heads, shape_.head_dim, shape_.n_rot, batch_.pos, rope_cs_.data());
    }
    void kv_store(int layer, const float* k, const float* v, int64_t n_tokens) override {
        const int64_t KV = shape_.kv_dim();
        for (int64_t t = 0; t < n_tokens; ++t) {
            kernels::store_row(kv_.k_type(), k + t * KV, kv_.k_row(layer, batch_.seq[t], batch_.pos[t]), KV);
            kernels::store_row(kv_.v_type(), v + t * KV, kv_.v_row(layer, batch_.seq[t], batch_.pos[t]), KV);
        }
    }
    void attention(int layer, const float* q, float* out, int64_t n_tokens, Precision, Precision) override {
        for (int64_t t = 0; t < n_tokens; ++t) {
            k_rows_[t] = kv_.k_row(layer, batch_.seq[t], 0);
            v_rows_[t] = kv_.v_row(layer, batch_.seq[t], 0);
            n_kv_[t] = batch_.pos[t] + 1;
        }
        kernels::AttentionArgs a;
        static_cast<kernels::AttentionHeads&>(a) = shape_.heads(q, out, n_tokens);
        a.k_rows = k_rows_.data();
        a.v_rows = v_rows_.data();
        a.n_kv = n_kv_.data();
        a.k_type = kv_.k_type();
        a.v_type = kv_.v_type();
        kernels::attention(a, pool_);
    }
    void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff) override {
        kernels::swiglu(gu, out, n_tokens, n_ff, pool_);
    }
    int check_finite(const float* x, int64_t n, int layer) override {
        return kernels::has_non_finite(x, n) ? layer : -1;
    }

private:
    ThreadPool& pool_;
    kernels::ActQuant aq_;
    const CpuWeight* last_ = nullptr;  // lead weight of the last matmul call (the NextWeights hint)
    BackendShape shape_;
    KvCache kv_;
    std::vector<float> rope_cs_;  // [n_ctx][n_rot]
    Batch batch_;
    std::vector<std::vector<float>> scratch_;
    std::vector<const void*> k_rows_, v_rows_;
    std::vector<int32_t> n_kv_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, const std::string& act_quant) {
    // kQ8 already keeps F32/F16/BF16 weights (no integer kernel) on the exact path, so "auto" and
    // "q8" are the same mode.
    kernels::ActQuant aq = kernels::ActQuant::kQ8;
    if (act_quant == "none")
        aq = kernels::ActQuant::kNone;
    else if (!act_quant.empty() && act_quant != "auto" && act_quant != "q8")
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--act-quant ", act_quant, ": use auto, none or q8");
    return std::make_unique<CpuBackend>(pool, aq);
}

}  // namespace pipelm::model
