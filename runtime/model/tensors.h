// The weight table of an architecture: one row per tensor (GGUF name, Hugging Face name, shape from the
// hyperparameters, global or per layer, which stage holds it). It is the only place a GGUF tensor
// name is written: the loader (glm4.cc), the shape checks (Glm4Config::from_gguf), the planner's
// byte counts, mkmodel and the model identity all walk this table.
//
// Rows are in GGUF file order (the order llama.cpp's converter and mkmodel write).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pipelm::gguf {
class GgufFile;
struct TensorInfo;
}  // namespace pipelm::gguf

namespace pipelm::model {

struct Glm4Config;
struct StageSpec;

enum class TensorId {
    kTokenEmbd,
    kAttnNorm,
    kAttnQ,
    kAttnK,
    kAttnV,
    kAttnQBias,
    kAttnKBias,
    kAttnVBias,
    kAttnOutput,
    kPostAttnNorm,
    kFfnNorm,
    kFfnUp,  // [gate; up]
    kFfnDown,
    kPostFfwNorm,
    kOutputNorm,
    kOutput,
    kCount,
};

enum class TensorKind {
    kMatrix,  // 2-D weight, any weight type, kept as stored (matmul or embedding rows)
    kNorm,    // 1-D RMSNorm weight, F32
    kBias,    // 1-D bias, any type (dequantized at load)
};

enum class TensorPresence {
    kAlways,
    kIfQkvBias,  // only in files with q/k/v biases (Glm4Config::qkv_bias)
    kIfUntied,   // absent when lm_head reuses token_embd (Glm4Config::tied_output)
};

struct TensorDef {
    TensorId id;
    const char* name;    // GGUF stem: "token_embd", "attn_q", ...
    const char* suffix;  // "weight" or "bias"
    bool per_layer;      // "blk.<l>.<name>.<suffix>" when true, "<name>.<suffix>" otherwise
    TensorKind kind;
    TensorPresence presence;
    // Hugging Face (transformers Glm4ForCausalLM) name: "model.layers.<l>.<hf>" when per_layer,
    // else the whole name. The tensor is the same array under both names: HF [rows, cols] is
    // ggml {cols, rows}; llama.cpp's converter permutes nothing for GLM-4 (mlp.gate_up_proj is
    // ffn_up, gate first; q/k are not reordered), so the bytes are the same.
    const char* hf;
};

// GLM-4's tensors in file order.
const std::vector<TensorDef>& glm4_tensors();
const TensorDef& tensor_def(TensorId id);

// "blk.3.attn_q.weight" (layer ignored for global tensors).
std::string tensor_name(TensorId id, int layer = -1);
// "model.layers.3.self_attn.q_proj.weight" (layer ignored for global tensors).
std::string hf_tensor_name(TensorId id, int layer = -1);
// Shape in ggml order ({ne0} or {ne0, ne1}) that the hyperparameters require.
std::vector<int64_t> tensor_shape(TensorId id, const Glm4Config& c);
// Whether a file with these hyperparameters has the tensor.
bool tensor_present(TensorId id, const Glm4Config& c);
// Whether the stage reads the tensor of `layer` (global tensors: layer ignored). token_embd is
// read by the first stage and, for a tied head, by the last.
bool stage_reads(TensorId id, int layer, const StageSpec& s, const Glm4Config& c);

// Calls fn(id, layer) for every tensor of a file with these hyperparameters, in file order
// (global tensors get layer -1).
template <typename Fn>
void for_each_tensor(const Glm4Config& c, int n_layer, Fn&& fn);

// Whether `f` holds llama.cpp's fused attn_qkv layout (which pipelm does not read).
bool has_fused_qkv(const gguf::GgufFile& f);

// Bytes in `f` of the tensors of layer l, of the embedding, and of the final norm + lm_head.
uint64_t layer_weight_bytes(const gguf::GgufFile& f, const Glm4Config& c, int layer);
uint64_t embedding_bytes(const gguf::GgufFile& f);
uint64_t head_bytes(const gguf::GgufFile& f, const Glm4Config& c);
uint64_t head_norm_bytes(const gguf::GgufFile& f);

// ---- implementation -------------------------------------------------------------------------
template <typename Fn>
void for_each_tensor(const Glm4Config& c, int n_layer, Fn&& fn) {
    const auto& table = glm4_tensors();
    bool layers_done = false;
    for (const TensorDef& d : table) {
        if (d.per_layer) {
            if (layers_done) continue;
            // Per-layer rows are contiguous in the table: emit all of a layer's before the next.
            for (int l = 0; l < n_layer; ++l)
                for (const TensorDef& e : table)
                    if (e.per_layer && tensor_present(e.id, c)) fn(e.id, l);
            layers_done = true;
        } else if (tensor_present(d.id, c)) {
            fn(d.id, -1);
        }
    }
}

}  // namespace pipelm::model
