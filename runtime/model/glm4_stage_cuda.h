// One pipeline stage of a GLM-4 model on one CUDA device: the same math, op order and
// numerics as Glm4Stage (glm4_stage.h), with its layers' weights and KV cache in device memory.
// Buffers in the Stage interface are host memory; each call stages them with cudaMemcpyAsync on
// the stage's own stream and synchronizes before returning.
//
// Weights: every type pipelm computes with (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl,
// q4_K, q5_K, q6_K, iq4_xs, mixed freely) is uploaded as stored, so a stage takes its file bytes
// on the device, as the planner counts them. The block types are decoded bit-exactly in
// registers by the decode GEMV and dequantized exactly to F32 per row chunk for prefill GEMMs
// (kernels/cuda/quant.cuh). KV cache: f32 (default) or f16. Precision: every matmul and the
// attention read StageOptions::precision (FP32 accumulation by default; nothing here tests the
// architecture).
//
// Errors: no such device -> Error{kCuda} "no CUDA device cuda:N: ..."; not enough device memory
// -> Error{kOutOfMemory} naming the device, the bytes and the fixes; NaN/Inf after a layer ->
// Error{kNumerics} naming the stage and layer.
#pragma once
#include <cstdint>
#include <memory>

#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/stage.h"

namespace pipelm::model {

class CudaGlm4Stage : public Stage {
public:
    CudaGlm4Stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg, const StageSpec& spec,
                  const StageOptions& opt, int device_ordinal);
    ~CudaGlm4Stage() override;
    CudaGlm4Stage(const CudaGlm4Stage&) = delete;
    CudaGlm4Stage& operator=(const CudaGlm4Stage&) = delete;

    const StageSpec& spec() const override { return spec_; }
    const Glm4Config& config() const override { return cfg_; }

    void embed(const int32_t* tokens, int64_t n, float* x) override;
    void forward(float* x, const Batch& b) override;
    void head(const float* x, int64_t n_rows, float* logits) override;

    uint64_t weight_bytes() const override;  // device bytes of this stage's weights
    uint64_t kv_bytes() const override;      // device bytes of its KV cache
    int device() const { return device_; }

private:
    struct Impl;
    Glm4Config cfg_;
    StageSpec spec_;
    int device_ = 0;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pipelm::model
