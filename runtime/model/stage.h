// The interface the pipeline drives: one stage of a model on one device. The implementation is
// Glm4Stage (glm4_stage.h), the one GLM-4 definition, over a device backend (backend.h): CPU
// always, CUDA from the run-time module libpipelm_cuda.so when this pipelm was built with CUDA.
// All buffers in this interface are host memory; a device stage stages them itself.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "runtime/base/thread_pool.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/arch.h"
#include "runtime/model/glm4_config.h"

namespace pipelm::model {

struct StageSpec {
    int index = 0;        // stage number (for messages)
    int first_layer = 0;  // [first_layer, last_layer)
    int last_layer = 0;
    bool has_embedding = true;
    bool has_head = true;
};

struct StageOptions {
    int n_ctx = 2048;
    int n_seq = 1;  // sequence slots in the KV cache
    GgmlType cache_type_k = GgmlType::kF32;
    GgmlType cache_type_v = GgmlType::kF32;
    bool check_finite = true;  // NaN/Inf check after every layer
    std::string device = "cpu";  // "cpu" or "cuda:N"
    // Accumulation precision policy; defaults to the architecture's (GLM-4: FP32 everywhere).
    // Only device backends honour a lower one (--attn-precision f16, to demonstrate the failure).
    PrecisionPolicy precision;
    // CPU matmuls on quantized weights: "none" = f32 activations (exact), "q8" = activations
    // rounded to int8 per 32 values for integer dot products (llama.cpp's scheme: faster, not
    // exact); "auto" or "" = the default (q8 for quantized weights, exact for F32/F16/BF16).
    std::string act_quant;
    // Tokens per forward the memory plan of a device stage reserves scratch for (--ubatch);
    // larger batches still run (the scratch grows).
    int n_ubatch = 512;
    // Called after each layer's weights are prepared (layers done, layers of this stage).
    std::function<void(int, int)> on_layer_loaded;
};

// A batch of tokens: token t belongs to sequence slot seq[t] at position pos[t]. Positions of a
// slot must be filled in order (a token at position p attends to the slot's rows 0..p).
struct Batch {
    int64_t n_tokens = 0;
    const int32_t* pos = nullptr;
    const int32_t* seq = nullptr;
};

class Stage {
public:
    virtual ~Stage() = default;
    virtual const StageSpec& spec() const = 0;
    virtual const Glm4Config& config() const = 0;
    virtual std::string device() const = 0;  // "cpu", "cuda:0"
    int n_embd() const { return config().n_embd; }
    // x[t][:] = embedding of tokens[t] (first stage only). Throws on an out-of-range id.
    virtual void embed(const int32_t* tokens, int64_t n, float* x) = 0;
    // Runs this stage's layers on x: [n_tokens][n_embd] (host), in place.
    virtual void forward(float* x, const Batch& b) = 0;
    // logits[r][:] = lm_head(final_norm(x[r])) for r < n_rows (last stage only).
    virtual void head(const float* x, int64_t n_rows, float* logits) = 0;
    virtual uint64_t weight_bytes() const = 0;
    virtual uint64_t kv_bytes() const = 0;
};

// Creates the stage for opt.device ("cpu" or "cuda:N"). A CUDA device loads the CUDA backend
// module on first use; throws Error{kUnsupported} when this pipelm has no CUDA module (built
// without CUDA, or the module is missing) and Error{kCuda} when the device cannot be used.
std::unique_ptr<Stage> make_stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg,
                                  const StageSpec& spec, const StageOptions& opt, ThreadPool& pool);

}  // namespace pipelm::model
