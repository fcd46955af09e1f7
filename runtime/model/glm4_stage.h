// One pipeline stage of a GLM-4 model on the CPU: the embedding (first stage), the blocks of
// layers [first_layer, last_layer), and the final norm + lm_head (last stage). It reads only
// its own tensors from the mapped GGUF and keeps the KV cache of its own layers.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/matmul.h"
#include "runtime/base/thread_pool.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/stage.h"

namespace pipelm::model {

class Glm4Stage : public Stage {
public:
    Glm4Stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg, const StageSpec& spec,
              const StageOptions& opt, ThreadPool& pool);

    const StageSpec& spec() const override { return spec_; }
    const Glm4Config& config() const override { return cfg_; }

    // x[t][:] = embedding of tokens[t] (first stage only). Throws on an out-of-range id.
    void embed(const int32_t* tokens, int64_t n, float* x) override;
    // Runs this stage's layers on x: [n_tokens][n_embd], in place.
    void forward(float* x, const Batch& b) override;
    // logits[r][:] = lm_head(final_norm(x[r])) for r < n_rows (last stage only). x rows contiguous.
    void head(const float* x, int64_t n_rows, float* logits) override;

    uint64_t weight_bytes() const override { return weight_bytes_; }
    uint64_t kv_bytes() const override { return kv_.bytes(); }

private:
    struct Layer {
        const float* attn_norm;
        const float* post_attn_norm;
        const float* ffn_norm;
        const float* post_ffw_norm;
        std::vector<float> bq, bk, bv;  // empty without q/k/v bias
        kernels::Matrix wq, wk, wv, wo, w_up, w_down;
    };

    void layer_forward(int local, float* x, const Batch& b);
    void ensure_scratch(int64_t n_tokens);
    const float* f32_tensor(const std::string& name, int64_t n);

    std::shared_ptr<const gguf::GgufFile> file_;
    Glm4Config cfg_;
    StageSpec spec_;
    StageOptions opt_;
    ThreadPool& pool_;
    kernels::ActQuant aq_ = kernels::ActQuant::kNone;  // --act-quant
    std::vector<Layer> layers_;
    kernels::WeightView embd_;
    const float* output_norm_ = nullptr;
    kernels::Matrix output_;
    KvCache kv_;
    std::vector<float> rope_cs_;  // [n_ctx][n_rot]
    uint64_t weight_bytes_ = 0;
    // Scratch, sized for the largest batch seen.
    int64_t scratch_tokens_ = 0;
    std::vector<float> h_, q_, k_, v_, att_, o_, gu_, m_, f_;
    std::vector<const void*> k_rows_, v_rows_;
    std::vector<int32_t> n_kv_;
};

}  // namespace pipelm::model
