// One pipeline stage of a GLM-4 model, written once for every device: the embedding (first
// stage), the blocks of layers [first_layer, last_layer), and the final norm + lm_head (last
// stage), as calls of the device-neutral ops of a Backend (runtime/model/backend.h). It reads
// only its own tensors (the weight table, runtime/model/tensors.h) from the mapped GGUF; the
// backend keeps them (CPU: the mapping itself, maybe repacked; CUDA: device copies) with the KV
// cache of its layers. The precision of each matmul and of attention is the architecture's
// policy (StageOptions::precision, from arch.cc).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/gguf/gguf.h"
#include "runtime/model/backend.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/stage.h"
#include "runtime/model/tensors.h"

namespace pipelm::model {

class Glm4Stage : public Stage {
public:
    Glm4Stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg, const StageSpec& spec,
              const StageOptions& opt, std::unique_ptr<Backend> backend);

    const StageSpec& spec() const override { return spec_; }
    const Glm4Config& config() const override { return cfg_; }
    std::string device() const override { return be_->device(); }

    void embed(const int32_t* tokens, int64_t n, float* x) override;
    void forward(float* x, const Batch& b) override;
    void head(const float* x, int64_t n_rows, float* logits) override;

    uint64_t weight_bytes() const override { return weight_bytes_; }
    uint64_t kv_bytes() const override { return be_->kv_bytes(); }

private:
    using W = std::unique_ptr<BackendWeight>;
    struct Layer {
        const float* attn_norm = nullptr;
        const float* post_attn_norm = nullptr;
        const float* ffn_norm = nullptr;
        const float* post_ffw_norm = nullptr;
        const float* bq = nullptr;  // nullptr without q/k/v bias
        const float* bk = nullptr;
        const float* bv = nullptr;
        W wq, wk, wv, wo, w_up, w_down;
    };
    // Scratch slots of the backend.
    enum Slot { kX, kH, kQ, kK, kV, kAtt, kO, kGu, kM, kLogits, kSlots };

    // The backend's buffers of one forward pass of n tokens (taken once per pass, not per layer).
    struct Scratch {
        float *h, *q, *k, *v, *att, *o, *gu, *m;
    };
    Scratch scratch(int64_t n);
    void layer_forward(int local, float* x, int64_t n, const Scratch& sc);
    const float* norm(TensorId id, int layer);
    const float* bias(TensorId id, int layer);
    W matrix(TensorId id, int layer, WeightUse use);
    [[noreturn]] void throw_non_finite(int local) const;

    std::shared_ptr<const gguf::GgufFile> file_;
    Glm4Config cfg_;
    StageSpec spec_;
    StageOptions opt_;
    std::unique_ptr<Backend> be_;
    std::vector<Layer> layers_;
    W embd_;                         // token_embd (first stage; the tied lm_head too)
    W output_own_;                   // lm_head when it is not embd_
    const BackendWeight* output_ = nullptr;
    const float* output_norm_ = nullptr;
    std::vector<std::vector<float>> host_vectors_;  // dequantized biases (the CPU reads them in place)
    uint64_t weight_bytes_ = 0;                     // file bytes of the tensors this stage reads
};

}  // namespace pipelm::model
