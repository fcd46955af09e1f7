#include "runtime/model/glm4_stage.h"

#include <cmath>
#include <cstring>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"

namespace pipelm::model {
namespace {

kernels::WeightView view_of(const gguf::TensorInfo& t) {
    kernels::WeightView v;
    v.type = t.type;
    v.data = t.data;
    v.cols = t.ne[0];
    v.rows = t.ne.size() > 1 ? t.ne[1] : 1;
    v.row_bytes = ggml_row_bytes(t.type, v.cols);
    return v;
}

std::vector<float> dequant_vector(const gguf::TensorInfo& t) {
    std::vector<float> out(static_cast<size_t>(t.n_elements()));
    kernels::dequantize_row(t.type, t.data, out.data(), t.n_elements());
    return out;
}

}  // namespace

const float* Glm4Stage::f32_tensor(const std::string& name, int64_t n) {
    const gguf::TensorInfo& t = file_->tensor(name);
    if (t.type != GgmlType::kF32 || t.n_elements() != n)
        PIPELM_THROW(ErrorCode::kFormat, file_->path(), ": tensor '", name, "' must be F32 with ", n, " elements");
    weight_bytes_ += t.bytes;
    return reinterpret_cast<const float*>(t.data);
}

Glm4Stage::Glm4Stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg, const StageSpec& spec,
                     const StageOptions& opt, ThreadPool& pool)
    : file_(std::move(file)), cfg_(cfg), spec_(spec), opt_(opt), pool_(pool) {
    PIPELM_CHECK(spec.first_layer >= 0 && spec.first_layer <= spec.last_layer && spec.last_layer <= cfg.n_layer,
                 "stage ", spec.index, ": layer range [", spec.first_layer, ", ", spec.last_layer,
                 ") is outside the model's ", cfg.n_layer, " layers");
    PIPELM_CHECK(opt.n_ctx > 0 && opt.n_seq > 0, "stage ", spec.index, ": --ctx and --parallel must be positive");
    const int64_t E = cfg.n_embd;
    if (spec.has_embedding) {
        embd_ = view_of(file_->tensor("token_embd.weight"));
        weight_bytes_ += file_->tensor("token_embd.weight").bytes;
    }
    kernels::Matrix::Options prep;
    prep.repack_q8 = opt.act_quant == "q8";
    prep.pool = &pool_;
    for (int l = spec.first_layer; l < spec.last_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        Layer L;
        L.attn_norm = f32_tensor(b + "attn_norm.weight", E);
        L.post_attn_norm = f32_tensor(b + "post_attention_norm.weight", E);
        L.ffn_norm = f32_tensor(b + "ffn_norm.weight", E);
        L.post_ffw_norm = f32_tensor(b + "post_ffw_norm.weight", E);
        auto mat = [&](const char* n) {
            const gguf::TensorInfo& t = file_->tensor(b + n + ".weight");
            file_->advise_willneed(t);
            weight_bytes_ += t.bytes;
            kernels::Matrix m = kernels::Matrix::prepare(view_of(t), prep);
            if (m.packed()) file_->advise_dontneed(t);  // the repacked copy is what decode reads
            return m;
        };
        L.wq = mat("attn_q");
        L.wk = mat("attn_k");
        L.wv = mat("attn_v");
        L.wo = mat("attn_output");
        L.w_up = mat("ffn_up");
        L.w_down = mat("ffn_down");
        if (cfg.qkv_bias) {
            L.bq = dequant_vector(file_->tensor(b + "attn_q.bias"));
            L.bk = dequant_vector(file_->tensor(b + "attn_k.bias"));
            L.bv = dequant_vector(file_->tensor(b + "attn_v.bias"));
        }
        layers_.push_back(std::move(L));
        if (opt.on_layer_loaded)
            opt.on_layer_loaded(static_cast<int>(layers_.size()), spec.last_layer - spec.first_layer);
    }
    if (spec.has_head) {
        output_norm_ = f32_tensor("output_norm.weight", E);
        const gguf::TensorInfo& o = file_->tensor(cfg.tied_output ? "token_embd.weight" : "output.weight");
        if (!cfg.tied_output || !spec.has_embedding) weight_bytes_ += o.bytes;
        output_ = kernels::Matrix::prepare(view_of(o), prep);
    }
    for (GgmlType t : {opt.cache_type_k, opt.cache_type_v})
        if (cfg.head_dim % ggml_type_info(t).block != 0)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "KV cache type ", ggml_type_name(t), " needs head_dim (",
                         cfg.head_dim, ") to be a multiple of ", ggml_type_info(t).block, ": use f16 or f32");
    if (opt.act_quant == "q8") aq_ = kernels::ActQuant::kQ8;
    else if (opt.act_quant.empty() || opt.act_quant == "none") aq_ = kernels::ActQuant::kNone;
    else PIPELM_THROW(ErrorCode::kInvalidArgument, "--act-quant ", opt.act_quant, ": use none or q8");
    kv_ = KvCache(static_cast<int>(layers_.size()), opt.n_seq, opt.n_ctx, cfg.kv_dim(), opt.cache_type_k,
                  opt.cache_type_v);
    rope_cs_.resize(static_cast<size_t>(opt.n_ctx) * cfg.n_rot);
    kernels::rope_table(rope_cs_.data(), opt.n_ctx, cfg.n_rot, cfg.rope_base);
}

void Glm4Stage::embed(const int32_t* tokens, int64_t n, float* x) {
    PIPELM_CHECK(spec_.has_embedding, "stage ", spec_.index, " has no embedding");
    for (int64_t t = 0; t < n; ++t) {
        const int32_t id = tokens[t];
        if (id < 0 || id >= cfg_.n_vocab)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "token id ", id, " at position ", t, " is outside the vocabulary [0, ",
                         cfg_.n_vocab, ")");
        kernels::dequantize_row(embd_.type, static_cast<const uint8_t*>(embd_.data) + embd_.row_bytes * id,
                                x + t * cfg_.n_embd, cfg_.n_embd);
    }
}

void Glm4Stage::ensure_scratch(int64_t n) {
    if (n <= scratch_tokens_) return;
    const int64_t E = cfg_.n_embd;
    h_.resize(n * E);
    q_.resize(n * cfg_.q_dim());
    k_.resize(n * cfg_.kv_dim());
    v_.resize(n * cfg_.kv_dim());
    att_.resize(n * cfg_.q_dim());
    o_.resize(n * E);
    gu_.resize(n * 2 * static_cast<int64_t>(cfg_.n_ff));
    m_.resize(n * static_cast<int64_t>(cfg_.n_ff));
    f_.resize(n * E);
    k_rows_.resize(n);
    v_rows_.resize(n);
    n_kv_.resize(n);
    scratch_tokens_ = n;
}

void Glm4Stage::forward(float* x, const Batch& b) {
    for (int64_t t = 0; t < b.n_tokens; ++t) {
        if (b.pos[t] < 0 || b.pos[t] >= opt_.n_ctx)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "position ", b.pos[t], " is outside the context of ", opt_.n_ctx,
                         " tokens: raise --ctx");
        if (b.seq[t] < 0 || b.seq[t] >= opt_.n_seq)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "sequence slot ", b.seq[t], " is outside [0, ", opt_.n_seq, ")");
    }
    ensure_scratch(b.n_tokens);
    for (size_t l = 0; l < layers_.size(); ++l) {
        layer_forward(static_cast<int>(l), x, b);
        if (opt_.check_finite && kernels::has_non_finite(x, b.n_tokens * cfg_.n_embd))
            PIPELM_THROW(ErrorCode::kNumerics, "stage ", spec_.index, ", layer ", spec_.first_layer + l,
                         ": non-finite activations (NaN/Inf) after the layer; the weights or inputs are corrupt "
                         "or the precision is too low (keep --attn-precision f32)");
    }
}

void Glm4Stage::layer_forward(int li, float* x, const Batch& b) {
    Layer& L = layers_[li];
    const int64_t n = b.n_tokens, E = cfg_.n_embd, Q = cfg_.q_dim(), KV = cfg_.kv_dim(), F = cfg_.n_ff;
    // Attention block.
    kernels::rms_norm(x, E, L.attn_norm, h_.data(), E, n, E, cfg_.eps, pool_);
    const kernels::MatmulOut qkv[3] = {{&L.wq, q_.data(), Q}, {&L.wk, k_.data(), KV}, {&L.wv, v_.data(), KV}};
    kernels::matmul_group(qkv, 3, h_.data(), E, n, pool_, aq_);
    if (!L.bq.empty())
        for (int64_t t = 0; t < n; ++t) {
            kernels::add_inplace(q_.data() + t * Q, L.bq.data(), Q);
            kernels::add_inplace(k_.data() + t * KV, L.bk.data(), KV);
            kernels::add_inplace(v_.data() + t * KV, L.bv.data(), KV);
        }
    kernels::rope_norm(q_.data(), Q, n, cfg_.n_head, cfg_.head_dim, cfg_.n_rot, b.pos, rope_cs_.data());
    kernels::rope_norm(k_.data(), KV, n, cfg_.n_head_kv, cfg_.head_dim, cfg_.n_rot, b.pos, rope_cs_.data());
    for (int64_t t = 0; t < n; ++t) {
        kernels::store_row(kv_.k_type(), k_.data() + t * KV, kv_.k_row(li, b.seq[t], b.pos[t]), KV);
        kernels::store_row(kv_.v_type(), v_.data() + t * KV, kv_.v_row(li, b.seq[t], b.pos[t]), KV);
        k_rows_[t] = kv_.k_row(li, b.seq[t], 0);
        v_rows_[t] = kv_.v_row(li, b.seq[t], 0);
        n_kv_[t] = b.pos[t] + 1;
    }
    kernels::AttentionArgs a;
    a.q = q_.data();
    a.ldq = Q;
    a.out = att_.data();
    a.ldo = Q;
    a.n_tokens = n;
    a.n_head = cfg_.n_head;
    a.n_head_kv = cfg_.n_head_kv;
    a.head_dim = cfg_.head_dim;
    a.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
    a.k_rows = k_rows_.data();
    a.v_rows = v_rows_.data();
    a.n_kv = n_kv_.data();
    a.kv_type = kv_.k_type();
    PIPELM_CHECK(kv_.k_type() == kv_.v_type(), "--cache-type-k and --cache-type-v must currently be equal");
    kernels::attention(a, pool_);
    kernels::matmul(L.wo, att_.data(), Q, o_.data(), E, n, pool_, aq_);
    kernels::rms_norm(o_.data(), E, L.post_attn_norm, o_.data(), E, n, E, cfg_.eps, pool_);
    kernels::add_inplace(x, o_.data(), n * E);
    // FFN block.
    kernels::rms_norm(x, E, L.ffn_norm, h_.data(), E, n, E, cfg_.eps, pool_);
    kernels::matmul(L.w_up, h_.data(), E, gu_.data(), 2 * F, n, pool_, aq_);
    kernels::swiglu(gu_.data(), m_.data(), n, F, pool_);
    kernels::matmul(L.w_down, m_.data(), F, f_.data(), E, n, pool_, aq_);
    kernels::rms_norm(f_.data(), E, L.post_ffw_norm, f_.data(), E, n, E, cfg_.eps, pool_);
    kernels::add_inplace(x, f_.data(), n * E);
}

void Glm4Stage::head(const float* x, int64_t n_rows, float* logits) {
    PIPELM_CHECK(spec_.has_head, "stage ", spec_.index, " has no lm_head");
    const int64_t E = cfg_.n_embd;
    ensure_scratch(n_rows);
    kernels::rms_norm(x, E, output_norm_, h_.data(), E, n_rows, E, cfg_.eps, pool_);
    kernels::matmul(output_, h_.data(), E, logits, cfg_.n_vocab, n_rows, pool_, aq_);
}

}  // namespace pipelm::model
