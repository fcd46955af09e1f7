#include "runtime/hf/hf_config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/base/error.h"

namespace pipelm::hf {
namespace {

using json = nlohmann::json;

int64_t int_key(const std::string& path, const json& j, const char* key, int64_t fallback, int64_t max) {
    if (!j.contains(key) || j[key].is_null()) {
        if (fallback > 0) return fallback;
        PIPELM_THROW(ErrorCode::kFormat, path, ": missing key '", key, "'");
    }
    const json& v = j[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > max)
        PIPELM_THROW(ErrorCode::kFormat, path, ": '", key, "' = ", v.dump(), " is not an integer in 1..", max);
    return v.get<int64_t>();
}

double float_key(const std::string& path, const json& j, const char* key, double fallback) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_number() || !std::isfinite(j[key].get<double>()))
        PIPELM_THROW(ErrorCode::kFormat, path, ": '", key, "' = ", j[key].dump(), " is not a finite number");
    return j[key].get<double>();
}

}  // namespace

HfConfig read_hf_config(const std::string& dir) {
    const std::string path = dir + "/config.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) PIPELM_THROW(ErrorCode::kIo, path, ": cannot open (an HF folder needs config.json)");
    std::stringstream ss;
    ss << in.rdbuf();
    const json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) PIPELM_THROW(ErrorCode::kFormat, path, ": not a JSON object");
    std::string archs;
    bool glm4 = false;
    if (j.contains("architectures") && j["architectures"].is_array())
        for (const json& a : j["architectures"]) {
            if (!a.is_string()) continue;
            archs += (archs.empty() ? "" : ", ") + a.get<std::string>();
            glm4 = glm4 || a.get<std::string>() == "Glm4ForCausalLM";
        }
    if (!glm4)
        PIPELM_THROW(ErrorCode::kUnsupported, path, ": architectures [", archs,
                     "] is not supported: pipelm runs Glm4ForCausalLM (GLM-4-0414) checkpoints");
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
        PIPELM_THROW(ErrorCode::kUnsupported, path, ": rope_scaling ", j["rope_scaling"].dump(), " is not supported");
    HfConfig c;
    c.n_layer = int_key(path, j, "num_hidden_layers", 0, 4096);
    c.n_embd = int_key(path, j, "hidden_size", 0, 1 << 24);
    c.n_ff = int_key(path, j, "intermediate_size", 0, 1 << 24);
    c.n_head = int_key(path, j, "num_attention_heads", 0, 4096);
    c.n_head_kv = int_key(path, j, "num_key_value_heads", c.n_head, 4096);
    c.head_dim = int_key(path, j, "head_dim", c.n_embd / c.n_head, 65536);
    c.n_ctx = int_key(path, j, "max_position_embeddings", 4096, 1 << 30);
    c.n_vocab = int_key(path, j, "vocab_size", 0, 1 << 26);
    // transformers' Glm4Config defaults: partial_rotary_factor 0.5, rms_norm_eps 1e-5, rope_theta 1e4.
    const double prf = float_key(path, j, "partial_rotary_factor", 0.5);
    if (!(prf > 0.0 && prf <= 1.0))
        PIPELM_THROW(ErrorCode::kFormat, path, ": 'partial_rotary_factor' = ", prf, " is not in (0, 1]");
    c.n_rot = static_cast<int64_t>(static_cast<double>(c.head_dim) * prf);
    c.eps = float_key(path, j, "rms_norm_eps", 1e-5);
    c.rope_base = float_key(path, j, "rope_theta", 10000.0);
    c.attention_bias = j.value("attention_bias", true);
    c.tie_word_embeddings = j.value("tie_word_embeddings", false);
    return c;
}

void hf_config_to_gguf(const HfConfig& c, const std::string& name, uint32_t file_type, gguf::GgufWriter& w) {
    const std::string p = "glm4.";
    w.set_string("general.architecture", "glm4");
    w.set_string("general.type", "model");
    w.set_string("general.name", name);
    w.set_u32(p + "block_count", static_cast<uint32_t>(c.n_layer));
    w.set_u32(p + "context_length", static_cast<uint32_t>(c.n_ctx));
    w.set_u32(p + "embedding_length", static_cast<uint32_t>(c.n_embd));
    w.set_u32(p + "feed_forward_length", static_cast<uint32_t>(c.n_ff));
    w.set_u32(p + "attention.head_count", static_cast<uint32_t>(c.n_head));
    w.set_u32(p + "attention.head_count_kv", static_cast<uint32_t>(c.n_head_kv));
    w.set_f32(p + "rope.freq_base", static_cast<float>(c.rope_base));
    w.set_f32(p + "attention.layer_norm_rms_epsilon", static_cast<float>(c.eps));
    w.set_u32(p + "attention.key_length", static_cast<uint32_t>(c.head_dim));
    w.set_u32(p + "attention.value_length", static_cast<uint32_t>(c.head_dim));
    w.set_u32("general.file_type", file_type);
    w.set_u32(p + "rope.dimension_count", static_cast<uint32_t>(c.n_rot));
}

}  // namespace pipelm::hf
