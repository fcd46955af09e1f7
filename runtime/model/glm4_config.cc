#include "runtime/model/glm4_config.h"

#include <sstream>

#include "runtime/base/error.h"
#include "runtime/model/tensors.h"

namespace pipelm::model {
namespace {

void expect_shape(const gguf::GgufFile& f, const std::string& name, const std::vector<int64_t>& ne) {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) PIPELM_THROW(ErrorCode::kFormat, f.path(), ": missing tensor '", name, "' (required by glm4)");
    if (t->ne != ne) {
        std::ostringstream got, want;
        for (size_t i = 0; i < t->ne.size(); ++i) got << (i ? ", " : "") << t->ne[i];
        for (size_t i = 0; i < ne.size(); ++i) want << (i ? ", " : "") << ne[i];
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": tensor '", name, "' has shape {", got.str(),
                     "} but the hyperparameters require {", want.str(), "}");
    }
    if (!ggml_type_info(t->type).supported)
        PIPELM_THROW(ErrorCode::kUnsupported, f.path(), ": tensor '", name, "' has type ",
                     ggml_type_info(t->type).name, ", which pipelm cannot compute with (supported: ",
                     supported_ggml_types(), ")");
}

int positive(const gguf::GgufFile& f, const std::string& key, int64_t v, int64_t max = (int64_t)1 << 24) {
    if (v <= 0 || v > max)
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": ", key, " = ", v, " is out of range (1..", max, ")");
    return static_cast<int>(v);
}

}  // namespace

Glm4Config Glm4Config::from_gguf(const gguf::GgufFile& f) {
    Glm4Config c;
    c.arch = f.get_string("general.architecture");
    find_arch(c.arch, f.path());  // refuses unknown architectures by name
    const std::string p = c.arch + ".";
    c.n_layer = positive(f, p + "block_count", f.get_int(p + "block_count"), 4096);
    c.n_embd = positive(f, p + "embedding_length", f.get_int(p + "embedding_length"));
    c.n_head = positive(f, p + "attention.head_count", f.get_int(p + "attention.head_count"), 4096);
    c.n_head_kv = positive(f, p + "attention.head_count_kv", f.get_int(p + "attention.head_count_kv", c.n_head), 4096);
    c.head_dim = positive(f, p + "attention.key_length", f.get_int(p + "attention.key_length", c.n_embd / c.n_head), 65536);
    const int vlen = static_cast<int>(f.get_int(p + "attention.value_length", c.head_dim));
    if (vlen != c.head_dim)
        PIPELM_THROW(ErrorCode::kUnsupported, f.path(), ": attention.value_length ", vlen, " != key_length ", c.head_dim);
    c.n_rot = positive(f, p + "rope.dimension_count", f.get_int(p + "rope.dimension_count", c.head_dim), 65536);
    c.n_ff = positive(f, p + "feed_forward_length", f.get_int(p + "feed_forward_length"));
    c.n_ctx_train = static_cast<int>(f.get_int(p + "context_length", 4096));
    const double eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
    const double base = f.get_float(p + "rope.freq_base", 10000.0);
    if (!(eps > 0.0 && eps <= 1.0))
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": layer_norm_rms_epsilon ", eps, " is out of range (0, 1]");
    if (!(base > 1.0 && base < 1e30))
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": rope.freq_base ", base, " is out of range");
    c.eps = static_cast<float>(eps);
    c.rope_base = static_cast<float>(base);
    if (c.n_head % c.n_head_kv != 0)
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": head_count ", c.n_head, " is not a multiple of head_count_kv ",
                     c.n_head_kv);
    if (c.n_rot > c.head_dim || c.n_rot % 2 != 0)
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": rope.dimension_count ", c.n_rot,
                     " must be even and at most key_length ", c.head_dim);
    if (!(c.eps > 0.f) || c.eps > 1.f)
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": layer_norm_rms_epsilon ", c.eps, " is out of range");
    if (f.has(p + "rope.dimension_sections")) {
        auto s = f.get_int_array(p + "rope.dimension_sections");
        if (s.size() >= 2 && s[0] > 0 && s[1] > 0)
            PIPELM_THROW(ErrorCode::kUnsupported, f.path(), ": multi-section RoPE (GLM-4.1V/GLM-OCR) is not supported");
    }

    const std::string embd = tensor_name(TensorId::kTokenEmbd);
    const gguf::TensorInfo& emb = f.tensor(embd);
    if (emb.ne.size() != 2)
        PIPELM_THROW(ErrorCode::kFormat, f.path(), ": ", embd, " must be 2-D");
    c.n_vocab = positive(f, embd + " rows", emb.ne[1], (int64_t)1 << 26);
    if (has_fused_qkv(f))
        PIPELM_THROW(ErrorCode::kUnsupported, f.path(), ": fused attn_qkv tensors are not supported; convert with separate attn_q/k/v");
    c.tied_output = f.find_tensor(tensor_name(TensorId::kOutput)) == nullptr;
    c.qkv_bias = f.find_tensor(tensor_name(TensorId::kAttnQBias, 0)) != nullptr;
    // Every tensor of the weight table: present, with the shape the hyperparameters give, of a
    // type pipelm computes with (norms: F32).
    for_each_tensor(c, c.n_layer, [&](TensorId id, int layer) {
        const std::string name = tensor_name(id, layer);
        expect_shape(f, name, tensor_shape(id, c));
        if (tensor_def(id).kind == TensorKind::kNorm && f.tensor(name).type != GgmlType::kF32)
            PIPELM_THROW(ErrorCode::kUnsupported, f.path(), ": norm tensor '", name, "' must be F32");
    });
    return c;
}

std::string Glm4Config::summary() const {
    std::ostringstream os;
    os << arch << ": " << n_layer << " layers, hidden " << n_embd << ", heads " << n_head << "/" << n_head_kv
       << " (head_dim " << head_dim << ", rope " << n_rot << "), ffn " << n_ff << ", vocab " << n_vocab
       << (qkv_bias ? ", qkv bias" : "");
    return os.str();
}

}  // namespace pipelm::model
