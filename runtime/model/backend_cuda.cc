// The CUDA backend (backend_cuda.h): the ops of backend.h over kernels/cuda/ on one device and
// one stream. Compiled only into the module libpipelm_cuda.so.
//
// Weights stay on the device as stored (every type of kernels/cuda/ops_cuda.h; block types are
// decoded inside the kernels), so a stage takes its file bytes there, as the planner counts them.
// KV cache: f32 (default) or f16. Precision: matmul and attention take the policy's accumulator.
// Threads: a backend belongs to the stage's thread; the entry points of a forward pass
// (reserve, matrix, vector, set_batch, upload, output_buffer) make its device current.
#include <algorithm>
#include <memory>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/base/log.h"
#include "runtime/model/backend_cuda.h"
#include "runtime/model/stage.h"

namespace pipelm::model {
namespace {
namespace kc = kernels::cuda;

kc::Accum accum_of(Precision p) {
    switch (p) {
        case Precision::kF32: return kc::Accum::kF32;
        case Precision::kBF16: return kc::Accum::kBF16;
        case Precision::kF16: return kc::Accum::kF16;
    }
    return kc::Accum::kF32;
}

kc::DeviceWeight device_shape(const kernels::WeightView& v) {
    kc::DeviceWeight w;
    w.type = v.type;
    w.rows = v.rows;
    w.cols = v.cols;
    w.row_bytes = ggml_row_bytes(v.type, v.cols);
    return w;
}

// Bytes the CUDA libraries take beyond what cudaMemGetInfo already shows once the context and
// the cuBLAS handle exist: cuBLAS's default workspace (32 MiB on Hopper) and launch resources.
constexpr uint64_t kLibraryReserve = 64ull << 20;

class CudaWeight final : public BackendWeight {
public:
    bool copied() const override { return true; }
    kc::DeviceWeight w;
    kc::DeviceBuffer buf;
};

const kc::DeviceWeight& dw(const BackendWeight* w) { return static_cast<const CudaWeight*>(w)->w; }

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(const CudaBackendArgs& a) : device_(a.device), stage_(a.stage) {
        int count = 0;
        const cudaError_t e = cudaGetDeviceCount(&count);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            PIPELM_THROW(ErrorCode::kNoDevice, "no CUDA device ", device(), ": ", cudaGetErrorString(e), " (",
                         cudaGetErrorName(e), "; stage ", stage_,
                         "): check the NVIDIA driver (CUDA 13 needs driver 580 or newer) and CUDA_VISIBLE_DEVICES, "
                         "or use --devices cpu");
        }
        if (device_ < 0 || device_ >= count)
            PIPELM_THROW(ErrorCode::kNoDevice, "no CUDA device ", device(), ": this machine has ", count, " CUDA device(s)",
                         count > 0 ? " (cuda:0 .. cuda:" + std::to_string(count - 1) + ")" : std::string(), " (stage ",
                         stage_, "); name an existing device in --devices, or cpu");
        use();
        kc::check_device_supported();
        stream_ = std::make_unique<kc::CudaStream>();
        blas_ = std::make_unique<kc::CublasHandle>(stream_->get());
    }
    ~CudaBackend() override {
        if (cudaSetDevice(device_) != cudaSuccess) (void)cudaGetLastError();
        if (stream_) PIPELM_CUDA_WARN(cudaStreamSynchronize(stream_->get()));
    }

    std::string device() const override { return "cuda:" + std::to_string(device_); }

    // ---- load time ----------------------------------------------------------------------------
    void reserve(const BackendPlan& p) override {
        use();
        const BackendShape& s = p.shape;
        // The CUDA attention reads K and V of one type (the CPU backend takes them apart).
        if (s.cache_type_k != s.cache_type_v)
            PIPELM_THROW(ErrorCode::kUnsupported, "stage ", s.stage, ": the CUDA backend keeps K and V in one type, not -ctk ",
                         ggml_type_name(s.cache_type_k), " -ctv ", ggml_type_name(s.cache_type_v),
                         ": give both f32 or both f16, or --devices cpu for this stage");
        if (s.cache_type_k != GgmlType::kF32 && s.cache_type_k != GgmlType::kF16)
            PIPELM_THROW(ErrorCode::kUnsupported, "stage ", s.stage, ": the CUDA backend keeps the KV cache as f32 or f16, not ",
                         ggml_type_name(s.cache_type_k), " (use --cache-type-k/--cache-type-v f32 or f16)");
        shape_ = s;
        for (const kernels::WeightView& v : p.matrices) {
            kernels::check_row_length(v.type, v.cols);
            if (!kc::weight_type_supported(v.type))
                PIPELM_THROW(ErrorCode::kUnsupported, "stage ", s.stage, ": a weight of type ", ggml_type_name(v.type),
                             " has no CUDA kernels (use --devices cpu for this stage)");
        }
        // Every allocation of the stage, summed before the first one.
        const size_t kv_elt = s.cache_type_k == GgmlType::kF16 ? 2 : 4;
        kv_layer_bytes_ = static_cast<size_t>(s.n_seq) * s.n_ctx * s.kv_dim() * kv_elt;
        const int64_t T = p.max_tokens;
        uint64_t weights = p.vector_bytes, workspace = 0;
        for (const kernels::WeightView& v : p.matrices) {
            const kc::DeviceWeight w = device_shape(v);
            weights += w.row_bytes * static_cast<uint64_t>(w.rows);
            workspace = std::max<uint64_t>(workspace, kc::matmul_workspace_bytes(w, T, kc::Accum::kF32));
        }
        const uint64_t kv = 2ull * s.n_layers * kv_layer_bytes_;
        const uint64_t rope = static_cast<uint64_t>(s.n_ctx) * s.n_rot * sizeof(float);
        const uint64_t acts = static_cast<uint64_t>(T) * (p.scratch_floats_per_token * sizeof(float) + 2 * sizeof(int32_t));
        const uint64_t scores =
            s.n_layers > 0 && !kc::attention_scores_fit_shared(s.head_dim, s.n_ctx) ? scores_scratch_bytes(T, s.n_ctx) : 0;
        const uint64_t logits = static_cast<uint64_t>(T) * p.n_vocab * sizeof(float);
        const uint64_t total = weights + kv + rope + acts + workspace + scores + logits + kLibraryReserve;
        size_t free_b = 0, total_b = 0;
        PIPELM_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        if (total > free_b)
            PIPELM_THROW(ErrorCode::kOutOfMemory, "stage ", s.stage, " (layers ", s.first_layer, "..",
                         s.first_layer + s.n_layers - 1, ") needs ", kc::mib(total), " on ", device(), ", which has ",
                         kc::mib(free_b), " free of ", kc::mib(total_b), " (weights ", kc::mib(weights), ", KV cache ",
                         kc::mib(kv), " for --ctx ", s.n_ctx, " x --parallel ", s.n_seq, ", activations ", kc::mib(acts),
                         " and matmul workspace ", kc::mib(workspace), " for --ubatch ", T, ", attention scores ",
                         kc::mib(scores), ", logits ", kc::mib(logits), ", RoPE table ", kc::mib(rope),
                         ", CUDA libraries ", kc::mib(kLibraryReserve),
                         "). Use more pipeline stages (--stages / --split, or more GPUs in --devices), a smaller --ctx, "
                         "--parallel or --ubatch, --cache-type-k/--cache-type-v f16, or a quantized model (e.g. q8_0)");
        PIPELM_DEBUG("stage ", s.stage, ": ", device(), " plan ", kc::mib(total), " of ", kc::mib(free_b), " free");
        if (s.n_layers > 0) {
            kv_ = alloc(static_cast<size_t>(kv), "the KV cache (" + std::to_string(s.n_layers) + " layers, --ctx " +
                                                     std::to_string(s.n_ctx) + ")");
            PIPELM_CUDA_CHECK(cudaMemsetAsync(kv_.get(), 0, kv_.bytes(), st()));
            std::vector<float> cs(static_cast<size_t>(s.n_ctx) * s.n_rot);
            kernels::rope_table(cs.data(), s.n_ctx, s.n_rot, s.rope_base);
            rope_ = alloc(cs.size() * sizeof(float), "the RoPE table");
            PIPELM_CUDA_CHECK(cudaMemcpyAsync(rope_.get(), cs.data(), rope_.bytes(), cudaMemcpyHostToDevice, st()));
            flags_ = alloc(static_cast<size_t>(s.n_layers) * sizeof(int), "NaN/Inf flags");
            flags_host_ = kc::PinnedBuffer(static_cast<size_t>(s.n_layers) * sizeof(int));
            PIPELM_CUDA_CHECK(cudaMemsetAsync(flags_.get(), 0, flags_.bytes(), st()));
            stream_->synchronize();  // `cs` goes out of scope
        }
    }
    uint64_t kv_bytes() const override { return kv_.bytes(); }

    // The copy is on the device: the host holds only the file pages, released by the stage after.
    std::unique_ptr<BackendWeight> matrix(const kernels::WeightView& v, WeightUse, const std::string& name,
                                          const RowsCopied&) override {
        use();
        auto w = std::make_unique<CudaWeight>();
        w->w = device_shape(v);
        const size_t bytes = w->w.row_bytes * static_cast<size_t>(w->w.rows);
        PIPELM_CHECK(bytes == v.row_bytes * static_cast<size_t>(v.rows), "tensor '", name, "': ", v.row_bytes,
                     " bytes per row, expected ", w->w.row_bytes);
        w->buf = alloc(bytes, "weight " + name);
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(w->buf.get(), v.data, bytes, cudaMemcpyHostToDevice, st()));
        stream_->synchronize();  // the file pages may be released once the backend's copy exists
        w->w.data = w->buf.get();
        return w;
    }
    const float* vector(const float* host, int64_t n, const std::string& name) override {
        use();
        kc::DeviceBuffer& b = vectors_.emplace_back(alloc(static_cast<size_t>(n) * sizeof(float), name));
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(b.get(), host, b.bytes(), cudaMemcpyHostToDevice, st()));
        stream_->synchronize();  // `host` may be a temporary of the caller
        return b.as<float>();
    }

    // ---- memory of a forward pass ---------------------------------------------------------------
    float* scratch(int slot, int64_t n, const char* what) override {
        if (slot >= static_cast<int>(scratch_.size())) scratch_.resize(static_cast<size_t>(slot) + 1);
        kc::DeviceBuffer& b = scratch_[static_cast<size_t>(slot)];
        const size_t bytes = static_cast<size_t>(n) * sizeof(float);
        if (bytes > b.bytes()) {
            stream_->synchronize();  // ops in flight may still read the old buffer
            b.reset();
            b = alloc(bytes, what);
        }
        return b.as<float>();
    }
    float* upload(const float* host, int64_t n, int slot) override {
        use();
        float* d = scratch(slot, n, "activations");
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(d, host, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice, st()));
        return d;
    }
    float* output_buffer(float*, int64_t n, int slot) override {
        use();
        return scratch(slot, n, slot == 0 ? "activations" : "logits");
    }
    void download(const float* x, float* host, int64_t n) override {
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(host, x, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost, st()));
        stream_->synchronize();
    }
    void set_batch(const Batch& b) override {
        use();
        const int64_t n = b.n_tokens;
        if (n > ints_cap_) {
            stream_->synchronize();
            ints_ = alloc(static_cast<size_t>(2 * n) * sizeof(int32_t), "positions");
            ints_host_ = kc::PinnedBuffer(static_cast<size_t>(2 * n) * sizeof(int32_t));
            ints_cap_ = n;
        }
        stream_->synchronize();  // the pinned staging buffer may still be in flight
        int32_t* ih = ints_host_.as<int32_t>();
        max_kv_ = 0;
        for (int64_t t = 0; t < n; ++t) {
            ih[t] = b.pos[t];
            ih[ints_cap_ + t] = b.seq[t];
            max_kv_ = std::max(max_kv_, b.pos[t] + 1);
        }
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(ints_.get(), ih, static_cast<size_t>(2 * ints_cap_) * sizeof(int32_t),
                                          cudaMemcpyHostToDevice, st()));
        scores_ = nullptr;
        scores_bytes_ = 0;
        if (!kc::attention_scores_fit_shared(shape_.head_dim, max_kv_)) {
            scores_bytes_ = scores_scratch_bytes(n, max_kv_);
            scores_ = scratch(kScoresSlot, static_cast<int64_t>(scores_bytes_ / sizeof(float)), "attention scores");
        }
        if (flags_.get()) PIPELM_CUDA_CHECK(cudaMemsetAsync(flags_.get(), 0, flags_.bytes(), st()));
        flags_pending_ = false;
    }
    int finish() override {
        if (!flags_pending_) {
            stream_->synchronize();
            return -1;
        }
        PIPELM_CUDA_CHECK(
            cudaMemcpyAsync(flags_host_.as<int>(), flags_.get(), flags_.bytes(), cudaMemcpyDeviceToHost, st()));
        stream_->synchronize();
        flags_pending_ = false;
        for (int l = 0; l < shape_.n_layers; ++l)
            if (flags_host_.as<int>()[l]) return l;
        return -1;
    }

    // ---- ops ------------------------------------------------------------------------------------
    void embed(const BackendWeight& table, const int32_t* ids, int64_t n, int64_t n_embd, float* x) override {
        if (n > ids_cap_) {
            stream_->synchronize();
            ids_ = alloc(static_cast<size_t>(n) * sizeof(int32_t), "token ids");
            ids_host_ = kc::PinnedBuffer(static_cast<size_t>(n) * sizeof(int32_t));
            ids_cap_ = n;
        }
        stream_->synchronize();
        std::memcpy(ids_host_.as<int32_t>(), ids, static_cast<size_t>(n) * sizeof(int32_t));
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(ids_.get(), ids_host_.as<int32_t>(), static_cast<size_t>(n) * sizeof(int32_t),
                                          cudaMemcpyHostToDevice, st()));
        const kc::DeviceWeight& e = dw(&table);
        kc::embedding(e.type, e.data, e.row_bytes, ids_.as<int32_t>(), n, n_embd, x, st());
    }
    void rms_norm(float* x, const float* w, float* y, int64_t n_rows, int64_t n, float eps, bool accumulate) override {
        kc::rms_norm(x, n, w, y, n, n_rows, n, eps, accumulate, st());
    }
    void matmul(const MatmulOut* outs, int n_outs, const float* x, int64_t ldx, int64_t n_tokens, Precision p) override {
        const kc::Accum acc = accum_of(p);
        size_t need = 0;
        for (int i = 0; i < n_outs; ++i) need = std::max(need, kc::matmul_workspace_bytes(dw(outs[i].w), n_tokens, acc));
        if (need > ws_.bytes()) {
            stream_->synchronize();
            ws_.reset();
            ws_ = alloc(need, "matmul workspace");
        }
        for (int i = 0; i < n_outs; ++i)
            kc::matmul(blas_->get(), dw(outs[i].w), x, ldx, outs[i].y, outs[i].ldy, n_tokens, acc, ws_.get(), ws_.bytes(),
                       st());
    }
    void add_bias(float* x, int64_t ld, const float* bias, int64_t n_rows, int64_t n) override {
        kc::add_bias_rows(x, ld, bias, n_rows, n, st());
    }
    void rope(float* x, int64_t ld, int64_t n_tokens, int n_heads) override {
        kc::rope_norm(x, ld, n_tokens, n_heads, shape_.head_dim, shape_.n_rot, pos(), rope_.as<float>(), st());
    }
    void kv_store(int layer, const float* k, const float* v, int64_t n_tokens) override {
        const int64_t KV = shape_.kv_dim();
        kc::kv_store(k, KV, v, KV, n_tokens, KV, pos(), seq(), shape_.n_ctx, shape_.cache_type_k, k_cache(layer),
                     v_cache(layer), st());
    }
    void attention(int layer, const float* q, float* out, int64_t n_tokens, Precision kq, Precision softmax_v) override {
        kc::AttentionArgs a;
        static_cast<kernels::AttentionHeads&>(a) = shape_.heads(q, out, n_tokens);
        a.k_cache = k_cache(layer);
        a.v_cache = v_cache(layer);
        a.n_ctx = shape_.n_ctx;
        a.kv_type = shape_.cache_type_k;
        a.pos = pos();
        a.seq = seq();
        a.max_kv = max_kv_;
        a.scores = scores_;
        a.scores_bytes = scores_bytes_;
        a.kq = accum_of(kq);
        a.softmax_v = accum_of(softmax_v);
        kc::attention(a, st());
    }
    void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff) override {
        kc::swiglu(gu, out, n_tokens, n_ff, st());
    }
    int check_finite(const float* x, int64_t n, int layer) override {
        kc::check_finite(x, n, flags_.as<int>() + layer, st());
        flags_pending_ = true;
        return -1;
    }

private:
    static constexpr int kScoresSlot = 1000;  // above the model's slots
    // Scores that do not fit in shared memory go to a global scratch of at most kScoresCap bytes
    // (at least one token's n_head * max_kv floats); a larger batch runs attention in launches of
    // as many tokens as it holds (kernels/cuda/launch.h).
    static constexpr size_t kScoresCap = size_t(256) << 20;
    size_t scores_scratch_bytes(int64_t tokens, int max_kv) const {
        return std::max(kc::attention_scores_bytes(1, shape_.n_head, max_kv),
                        std::min(kScoresCap, kc::attention_scores_bytes(tokens, shape_.n_head, max_kv)));
    }

    void use() const { PIPELM_CUDA_CHECK(cudaSetDevice(device_)); }
    cudaStream_t st() const { return stream_->get(); }
    const int32_t* pos() const { return ints_.as<int32_t>(); }
    const int32_t* seq() const { return ints_.as<int32_t>() + ints_cap_; }
    void* k_cache(int li) const { return kv_.as<uint8_t>() + static_cast<size_t>(li) * kv_layer_bytes_; }
    void* v_cache(int li) const {
        return kv_.as<uint8_t>() + (static_cast<size_t>(shape_.n_layers) + static_cast<size_t>(li)) * kv_layer_bytes_;
    }

    kc::DeviceBuffer alloc(size_t bytes, const std::string& what) {
        try {
            return kc::DeviceBuffer(bytes, what.c_str());
        } catch (const Error& e) {
            if (e.code() != ErrorCode::kOutOfMemory) throw;
            PIPELM_THROW(ErrorCode::kOutOfMemory, "stage ", stage_, " on ", device(), ": ", e.what(),
                         ". Use more pipeline stages (--stages / --split, or more GPUs in --devices), a smaller --ctx, "
                         "--parallel or --ubatch, --cache-type-k/--cache-type-v f16, or a quantized model (e.g. q8_0)");
        }
    }

    int device_;
    int stage_;
    std::unique_ptr<kc::CudaStream> stream_;  // declared before every buffer: destroyed after them
    std::unique_ptr<kc::CublasHandle> blas_;
    BackendShape shape_;
    std::vector<kc::DeviceBuffer> vectors_;  // norms and biases
    kc::DeviceBuffer kv_;                    // K of every layer, then V of every layer
    size_t kv_layer_bytes_ = 0;              // one layer's K (or V): n_seq * n_ctx * kv_dim * elt
    kc::DeviceBuffer rope_;                  // [n_ctx][n_rot] cos/sin
    kc::DeviceBuffer flags_;                 // [n_layers] NaN/Inf flag per layer
    kc::PinnedBuffer flags_host_;
    bool flags_pending_ = false;
    std::vector<kc::DeviceBuffer> scratch_;
    kc::DeviceBuffer ws_;
    kc::DeviceBuffer ints_;  // [2][ints_cap_]: pos | seq
    kc::PinnedBuffer ints_host_;
    int64_t ints_cap_ = 0;
    kc::DeviceBuffer ids_;
    kc::PinnedBuffer ids_host_;
    int64_t ids_cap_ = 0;
    int max_kv_ = 0;
    float* scores_ = nullptr;
    size_t scores_bytes_ = 0;
};

}  // namespace
}  // namespace pipelm::model

extern "C" __attribute__((visibility("default"))) pipelm::model::Backend* pipelm_cuda_make_backend(
    const pipelm::model::CudaBackendArgs* args) {
    using namespace pipelm;
    if (!args || args->abi != model::kCudaModuleAbi)
        PIPELM_THROW(ErrorCode::kUnsupported, "the CUDA module libpipelm_cuda.so was built for another pipelm (module ABI ",
                     model::kCudaModuleAbi, ", pipelm ", args ? args->abi : -1,
                     "): rebuild both from the same sources, or set PIPELM_CUDA_MODULE to the matching module");
    set_log_level(static_cast<LogLevel>(args->log_level));
    return new model::CudaBackend(*args);
}
