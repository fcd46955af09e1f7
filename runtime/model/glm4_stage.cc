#include "runtime/model/glm4_stage.h"

#include <algorithm>
#include <cmath>

#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/model/tensors.h"

namespace pipelm::model {
namespace {

// `f` maps the tensor if it is not mapped yet (an HF folder's weights: only the stage's own).
kernels::WeightView view_of(const gguf::GgufFile& f, const gguf::TensorInfo& t) {
    kernels::WeightView v;
    v.type = t.type;
    v.data = f.data(t);
    v.cols = t.ne[0];
    v.rows = t.ne.size() > 1 ? t.ne[1] : 1;
    v.row_bytes = ggml_row_bytes(t.type, v.cols);
    return v;
}

}  // namespace

const float* Glm4Stage::norm(TensorId id, int layer) {
    const std::string name = tensor_name(id, layer);
    const gguf::TensorInfo& t = file_->tensor(name);
    const int64_t n = cfg_.n_embd;
    if (t.type != GgmlType::kF32 || t.n_elements() != n)
        PIPELM_THROW(ErrorCode::kFormat, file_->path(), ": tensor '", name, "' must be F32 with ", n, " elements");
    weight_bytes_ += t.bytes;
    return be_->vector(reinterpret_cast<const float*>(file_->data(t)), n, name);
}

const float* Glm4Stage::bias(TensorId id, int layer) {
    const std::string name = tensor_name(id, layer);
    const gguf::TensorInfo& t = file_->tensor(name);
    weight_bytes_ += t.bytes;
    std::vector<float>& v = host_vectors_.emplace_back(static_cast<size_t>(t.n_elements()));
    kernels::dequantize_row(t.type, file_->data(t), v.data(), t.n_elements());
    return be_->vector(v.data(), t.n_elements(), name);
}

Glm4Stage::W Glm4Stage::matrix(TensorId id, int layer, WeightUse use) {
    const std::string name = tensor_name(id, layer);
    const gguf::TensorInfo& t = file_->tensor(name);
    file_->advise_willneed(t);
    weight_bytes_ += t.bytes;
    const kernels::WeightView v = view_of(*file_, t);
    // The rows already copied are dropped as the backend goes (peak: one copy plus a step).
    W w = be_->matrix(v, use, name, [&](int64_t row_end) {
        file_->advise_dontneed(t, 0, static_cast<uint64_t>(row_end) * v.row_bytes);
    });
    if (w->copied()) file_->advise_dontneed(t);  // the backend's copy is what the ops read
    return w;
}

Glm4Stage::Glm4Stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg, const StageSpec& spec,
                     const StageOptions& opt, std::unique_ptr<Backend> backend)
    : file_(std::move(file)), cfg_(cfg), spec_(spec), opt_(opt), be_(std::move(backend)) {
    PIPELM_CHECK(spec.first_layer >= 0 && spec.first_layer <= spec.last_layer && spec.last_layer <= cfg.n_layer,
                 "stage ", spec.index, ": layer range [", spec.first_layer, ", ", spec.last_layer,
                 ") is outside the model's ", cfg.n_layer, " layers");
    PIPELM_CHECK(opt.n_ctx > 0 && opt.n_seq > 0, "stage ", spec.index, ": --ctx and --parallel must be positive");
    // The plan first, from the weight table: the backend refuses a stage that cannot fit before
    // any weight is read.
    BackendPlan plan;
    BackendShape& s = plan.shape;
    s.stage = spec.index;
    s.first_layer = spec.first_layer;
    s.n_layers = spec.last_layer - spec.first_layer;
    s.n_ctx = opt.n_ctx;
    s.n_seq = opt.n_seq;
    s.n_head = cfg.n_head;
    s.n_head_kv = cfg.n_head_kv;
    s.head_dim = cfg.head_dim;
    s.n_rot = cfg.n_rot;
    s.rope_base = cfg.rope_base;
    s.cache_type_k = opt.cache_type_k;
    s.cache_type_v = opt.cache_type_v;
    for_each_tensor(cfg, cfg.n_layer, [&](TensorId id, int l) {
        if (!stage_reads(id, l, spec, cfg)) return;
        const gguf::TensorInfo& t = file_->tensor(tensor_name(id, l));
        if (tensor_def(id).kind == TensorKind::kMatrix) plan.matrices.push_back(view_of(*file_, t));
        else plan.vector_bytes += static_cast<uint64_t>(t.n_elements()) * sizeof(float);
    });
    plan.max_tokens = std::max(1, opt.n_ubatch);
    plan.scratch_floats_per_token =
        3 * static_cast<int64_t>(cfg.n_embd) + 2 * cfg.q_dim() + 2 * cfg.kv_dim() + 3 * static_cast<int64_t>(cfg.n_ff);
    plan.n_vocab = spec.has_head ? cfg.n_vocab : 0;
    be_->reserve(plan);

    const bool tied_here = spec.has_head && cfg.tied_output && spec.has_embedding;
    if (spec.has_embedding)
        embd_ = matrix(TensorId::kTokenEmbd, -1, tied_here ? WeightUse::kBoth : WeightUse::kEmbedding);
    for (int l = spec.first_layer; l < spec.last_layer; ++l) {
        Layer L;
        L.attn_norm = norm(TensorId::kAttnNorm, l);
        L.wq = matrix(TensorId::kAttnQ, l, WeightUse::kMatmul);
        L.wk = matrix(TensorId::kAttnK, l, WeightUse::kMatmul);
        L.wv = matrix(TensorId::kAttnV, l, WeightUse::kMatmul);
        if (cfg.qkv_bias) {
            L.bq = bias(TensorId::kAttnQBias, l);
            L.bk = bias(TensorId::kAttnKBias, l);
            L.bv = bias(TensorId::kAttnVBias, l);
        }
        L.wo = matrix(TensorId::kAttnOutput, l, WeightUse::kMatmul);
        L.post_attn_norm = norm(TensorId::kPostAttnNorm, l);
        L.ffn_norm = norm(TensorId::kFfnNorm, l);
        L.w_up = matrix(TensorId::kFfnUp, l, WeightUse::kMatmul);
        L.w_down = matrix(TensorId::kFfnDown, l, WeightUse::kMatmul);
        L.post_ffw_norm = norm(TensorId::kPostFfwNorm, l);
        layers_.push_back(std::move(L));
        if (opt.on_layer_loaded)
            opt.on_layer_loaded(static_cast<int>(layers_.size()), spec.last_layer - spec.first_layer);
    }
    if (spec.has_head) {
        output_norm_ = norm(TensorId::kOutputNorm, -1);
        if (tied_here) {
            output_ = embd_.get();
        } else {
            output_own_ = matrix(cfg.tied_output ? TensorId::kTokenEmbd : TensorId::kOutput, -1, WeightUse::kMatmul);
            output_ = output_own_.get();
        }
    }
}

void Glm4Stage::embed(const int32_t* tokens, int64_t n, float* x) {
    PIPELM_CHECK(spec_.has_embedding, "stage ", spec_.index, " has no embedding");
    for (int64_t t = 0; t < n; ++t) {
        const int32_t id = tokens[t];
        if (id < 0 || id >= cfg_.n_vocab)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "token id ", id, " at position ", t, " is outside the vocabulary [0, ",
                         cfg_.n_vocab, ")");
    }
    if (n <= 0) return;
    const int64_t E = cfg_.n_embd;
    float* xd = be_->output_buffer(x, n * E, kX);
    be_->embed(*embd_, tokens, n, E, xd);
    be_->download(xd, x, n * E);
}

void Glm4Stage::forward(float* x, const Batch& b) {
    for (int64_t t = 0; t < b.n_tokens; ++t) {
        if (b.pos[t] < 0 || b.pos[t] >= opt_.n_ctx)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "position ", b.pos[t], " is outside the context of ", opt_.n_ctx,
                         " tokens: raise --ctx");
        if (b.seq[t] < 0 || b.seq[t] >= opt_.n_seq)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "sequence slot ", b.seq[t], " is outside [0, ", opt_.n_seq, ")");
    }
    const int64_t n = b.n_tokens, E = cfg_.n_embd;
    if (n <= 0 || layers_.empty()) return;
    be_->set_batch(b);
    float* xd = be_->upload(x, n * E, kX);
    const Scratch sc = scratch(n);
    for (size_t l = 0; l < layers_.size(); ++l) {
        layer_forward(static_cast<int>(l), xd, n, sc);
        if (opt_.check_finite && be_->check_finite(xd, n * E, static_cast<int>(l)) >= 0)
            throw_non_finite(static_cast<int>(l));
    }
    be_->download(xd, x, n * E);
    const int bad = be_->finish();
    if (bad >= 0) throw_non_finite(bad);
}

// The GLM-4 block (docs/glm4-spec.md): sandwich RMSNorms around attention and the FFN.
Glm4Stage::Scratch Glm4Stage::scratch(int64_t n) {
    const int64_t E = cfg_.n_embd, Q = cfg_.q_dim(), KV = cfg_.kv_dim(), F = cfg_.n_ff;
    Scratch sc;
    sc.h = be_->scratch(kH, n * E, "normed activations");
    sc.q = be_->scratch(kQ, n * Q, "queries");
    sc.k = be_->scratch(kK, n * KV, "keys");
    sc.v = be_->scratch(kV, n * KV, "values");
    sc.att = be_->scratch(kAtt, n * Q, "attention output");
    sc.o = be_->scratch(kO, n * E, "projection output");
    sc.gu = be_->scratch(kGu, n * 2 * F, "FFN gate/up");
    sc.m = be_->scratch(kM, n * F, "FFN hidden");
    return sc;
}

void Glm4Stage::layer_forward(int li, float* x, int64_t n, const Scratch& sc) {
    const Layer& L = layers_[li];
    Backend& be = *be_;
    const PrecisionPolicy& prec = opt_.precision;
    const int64_t E = cfg_.n_embd, Q = cfg_.q_dim(), KV = cfg_.kv_dim(), F = cfg_.n_ff;
    float *h = sc.h, *q = sc.q, *k = sc.k, *v = sc.v, *att = sc.att, *o = sc.o, *gu = sc.gu, *m = sc.m;
    // Attention block: x += post_attention_norm(wo · attention(rope(wq·h), rope(wk·h), wv·h)).
    be.rms_norm(x, L.attn_norm, h, n, E, cfg_.eps, false);
    const Backend::MatmulOut qkv[3] = {{L.wq.get(), q, Q}, {L.wk.get(), k, KV}, {L.wv.get(), v, KV}};
    be.matmul(qkv, 3, h, E, n, Precision::kF32);
    if (L.bq) {
        be.add_bias(q, Q, L.bq, n, Q);
        be.add_bias(k, KV, L.bk, n, KV);
        be.add_bias(v, KV, L.bv, n, KV);
    }
    be.rope(q, Q, n, cfg_.n_head);
    be.rope(k, KV, n, cfg_.n_head_kv);
    be.kv_store(li, k, v, n);
    be.attention(li, q, att, n, prec.kq, prec.softmax_v);
    const Backend::MatmulOut wo = {L.wo.get(), o, E};
    be.matmul(&wo, 1, att, Q, n, prec.attn_output);
    be.rms_norm(o, L.post_attn_norm, x, n, E, cfg_.eps, true);
    // FFN block: x += post_ffw_norm(w_down · swiglu(w_up · ffn_norm(x))).
    be.rms_norm(x, L.ffn_norm, h, n, E, cfg_.eps, false);
    const Backend::MatmulOut up = {L.w_up.get(), gu, 2 * F};
    be.matmul(&up, 1, h, E, n, Precision::kF32);
    be.swiglu(gu, m, n, F);
    const Backend::MatmulOut down = {L.w_down.get(), o, E};
    be.matmul(&down, 1, m, F, n, prec.ffn_down);
    be.rms_norm(o, L.post_ffw_norm, x, n, E, cfg_.eps, true);
}

void Glm4Stage::head(const float* x, int64_t n_rows, float* logits) {
    PIPELM_CHECK(spec_.has_head, "stage ", spec_.index, " has no lm_head");
    if (n_rows <= 0) return;
    const int64_t E = cfg_.n_embd, V = cfg_.n_vocab;
    const float* xd = be_->upload(x, n_rows * E, kX);  // only read
    float* h = be_->scratch(kH, n_rows * E, "normed activations");
    be_->rms_norm(const_cast<float*>(xd), output_norm_, h, n_rows, E, cfg_.eps, false);
    float* out = be_->output_buffer(logits, n_rows * V, kLogits);
    const Backend::MatmulOut lm = {output_, out, V};
    be_->matmul(&lm, 1, h, E, n_rows, Precision::kF32);
    be_->download(out, logits, n_rows * V);
}

void Glm4Stage::throw_non_finite(int local) const {
    const PrecisionPolicy& p = opt_.precision;
    std::string hint = "the weights or inputs are corrupt or the precision is too low (keep --attn-precision f32)";
    if (p.kq == Precision::kF16 || p.softmax_v == Precision::kF16)
        hint = "with --attn-precision f16: K·Q overflowed FP16; use the default f32";
    else if (p.kq != Precision::kF32 || p.softmax_v != Precision::kF32 || p.attn_output != Precision::kF32 ||
             p.ffn_down != Precision::kF32)
        hint = std::string("the precision policy is below FP32 (kq ") + precision_name(p.kq) + ", softmax_v " +
               precision_name(p.softmax_v) + ", attn_output " + precision_name(p.attn_output) + ", ffn_down " +
               precision_name(p.ffn_down) + "); use the default f32";
    PIPELM_THROW(ErrorCode::kNumerics, "stage ", spec_.index, ", layer ", spec_.first_layer + local,
                 ": non-finite activations (NaN/Inf) after the layer on ", be_->device(), "; ", hint);
}

}  // namespace pipelm::model
