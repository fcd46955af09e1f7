#include "runtime/model/tensors.h"

#include "runtime/base/error.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/stage.h"

namespace pipelm::model {

const std::vector<TensorDef>& glm4_tensors() {
    using K = TensorKind;
    using P = TensorPresence;
    static const std::vector<TensorDef> t = {
        {TensorId::kTokenEmbd, "token_embd", "weight", false, K::kMatrix, P::kAlways, "model.embed_tokens.weight"},
        {TensorId::kAttnNorm, "attn_norm", "weight", true, K::kNorm, P::kAlways, "input_layernorm.weight"},
        {TensorId::kAttnQ, "attn_q", "weight", true, K::kMatrix, P::kAlways, "self_attn.q_proj.weight"},
        {TensorId::kAttnK, "attn_k", "weight", true, K::kMatrix, P::kAlways, "self_attn.k_proj.weight"},
        {TensorId::kAttnV, "attn_v", "weight", true, K::kMatrix, P::kAlways, "self_attn.v_proj.weight"},
        {TensorId::kAttnQBias, "attn_q", "bias", true, K::kBias, P::kIfQkvBias, "self_attn.q_proj.bias"},
        {TensorId::kAttnKBias, "attn_k", "bias", true, K::kBias, P::kIfQkvBias, "self_attn.k_proj.bias"},
        {TensorId::kAttnVBias, "attn_v", "bias", true, K::kBias, P::kIfQkvBias, "self_attn.v_proj.bias"},
        {TensorId::kAttnOutput, "attn_output", "weight", true, K::kMatrix, P::kAlways, "self_attn.o_proj.weight"},
        {TensorId::kPostAttnNorm, "post_attention_norm", "weight", true, K::kNorm, P::kAlways, "post_self_attn_layernorm.weight"},
        {TensorId::kFfnNorm, "ffn_norm", "weight", true, K::kNorm, P::kAlways, "post_attention_layernorm.weight"},
        {TensorId::kFfnUp, "ffn_up", "weight", true, K::kMatrix, P::kAlways, "mlp.gate_up_proj.weight"},
        {TensorId::kFfnDown, "ffn_down", "weight", true, K::kMatrix, P::kAlways, "mlp.down_proj.weight"},
        {TensorId::kPostFfwNorm, "post_ffw_norm", "weight", true, K::kNorm, P::kAlways, "post_mlp_layernorm.weight"},
        {TensorId::kOutputNorm, "output_norm", "weight", false, K::kNorm, P::kAlways, "model.norm.weight"},
        {TensorId::kOutput, "output", "weight", false, K::kMatrix, P::kIfUntied, "lm_head.weight"},
    };
    return t;
}

const TensorDef& tensor_def(TensorId id) {
    for (const TensorDef& d : glm4_tensors())
        if (d.id == id) return d;
    PIPELM_THROW(ErrorCode::kInternal, "tensor id ", static_cast<int>(id), " is not in the weight table");
}

std::string tensor_name(TensorId id, int layer) {
    const TensorDef& d = tensor_def(id);
    std::string s;
    if (d.per_layer) s = "blk." + std::to_string(layer) + ".";
    return s + d.name + "." + d.suffix;
}

std::string hf_tensor_name(TensorId id, int layer) {
    const TensorDef& d = tensor_def(id);
    if (!d.per_layer) return d.hf;
    return "model.layers." + std::to_string(layer) + "." + d.hf;
}

std::vector<int64_t> tensor_shape(TensorId id, const Glm4Config& c) {
    const int64_t E = c.n_embd, Q = c.q_dim(), KV = c.kv_dim(), F = c.n_ff, V = c.n_vocab;
    switch (id) {
        case TensorId::kTokenEmbd: return {E, V};
        case TensorId::kAttnNorm: return {E};
        case TensorId::kAttnQ: return {E, Q};
        case TensorId::kAttnK: return {E, KV};
        case TensorId::kAttnV: return {E, KV};
        case TensorId::kAttnQBias: return {Q};
        case TensorId::kAttnKBias: return {KV};
        case TensorId::kAttnVBias: return {KV};
        case TensorId::kAttnOutput: return {Q, E};
        case TensorId::kPostAttnNorm: return {E};
        case TensorId::kFfnNorm: return {E};
        case TensorId::kFfnUp: return {E, 2 * F};
        case TensorId::kFfnDown: return {F, E};
        case TensorId::kPostFfwNorm: return {E};
        case TensorId::kOutputNorm: return {E};
        case TensorId::kOutput: return {E, V};
        case TensorId::kCount: break;
    }
    PIPELM_THROW(ErrorCode::kInternal, "tensor id ", static_cast<int>(id), " has no shape");
}

bool tensor_present(TensorId id, const Glm4Config& c) {
    switch (tensor_def(id).presence) {
        case TensorPresence::kAlways: return true;
        case TensorPresence::kIfQkvBias: return c.qkv_bias;
        case TensorPresence::kIfUntied: return !c.tied_output;
    }
    return false;
}

bool stage_reads(TensorId id, int layer, const StageSpec& s, const Glm4Config& c) {
    if (!tensor_present(id, c)) return false;
    if (tensor_def(id).per_layer) return layer >= s.first_layer && layer < s.last_layer;
    switch (id) {
        case TensorId::kTokenEmbd: return s.has_embedding || (s.has_head && c.tied_output);
        case TensorId::kOutputNorm:
        case TensorId::kOutput: return s.has_head;
        default: return false;
    }
}

bool has_fused_qkv(const gguf::GgufFile& f) { return f.find_tensor("blk.0.attn_qkv.weight") != nullptr; }

uint64_t layer_weight_bytes(const gguf::GgufFile& f, const Glm4Config& c, int layer) {
    uint64_t b = 0;
    for (const TensorDef& d : glm4_tensors())
        if (d.per_layer && tensor_present(d.id, c)) b += f.tensor(tensor_name(d.id, layer)).bytes;
    return b;
}

uint64_t embedding_bytes(const gguf::GgufFile& f) { return f.tensor(tensor_name(TensorId::kTokenEmbd)).bytes; }

uint64_t head_norm_bytes(const gguf::GgufFile& f) { return f.tensor(tensor_name(TensorId::kOutputNorm)).bytes; }

uint64_t head_bytes(const gguf::GgufFile& f, const Glm4Config& c) {
    const TensorId lm = c.tied_output ? TensorId::kTokenEmbd : TensorId::kOutput;
    return head_norm_bytes(f) + f.tensor(tensor_name(lm)).bytes;
}

}  // namespace pipelm::model
