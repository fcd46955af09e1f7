#include "runtime/model/glm4_stage_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/base/log.h"

namespace pipelm::model {
namespace kc = kernels::cuda;

namespace {

// Every weight type pipelm computes with stays on the device as stored (quantized blocks are
// decoded inside the kernels), so a matrix takes its file bytes there, as the planner counts.
uint64_t device_bytes_of(const gguf::TensorInfo& t) { return t.bytes; }

kc::Accum accum_of(Precision p) {
    switch (p) {
        case Precision::kF32: return kc::Accum::kF32;
        case Precision::kBF16: return kc::Accum::kBF16;
        case Precision::kF16: return kc::Accum::kF16;
    }
    return kc::Accum::kF32;
}

std::string device_name(int d) { return "cuda:" + std::to_string(d); }

}  // namespace

struct CudaGlm4Stage::Impl {
    struct Matrix {
        kc::DeviceWeight w;
        kc::DeviceBuffer buf;
    };
    struct Layer {
        kc::DeviceBuffer vecs;  // [attn_norm E][post_attention_norm E][ffn_norm E][post_ffw_norm E][bq Q][bk KV][bv KV]
        const float* attn_norm = nullptr;
        const float* post_attn_norm = nullptr;
        const float* ffn_norm = nullptr;
        const float* post_ffw_norm = nullptr;
        const float* bq = nullptr;  // nullptr without q/k/v bias
        const float* bk = nullptr;
        const float* bv = nullptr;
        Matrix wq, wk, wv, wo, w_up, w_down;
    };

    Impl(std::shared_ptr<const gguf::GgufFile> f, const Glm4Config& c, const StageSpec& s, const StageOptions& o,
         int dev)
        : file(std::move(f)), cfg(c), spec(s), opt(o), device(dev), blas(stream.get()) {}

    std::shared_ptr<const gguf::GgufFile> file;
    Glm4Config cfg;
    StageSpec spec;
    StageOptions opt;
    int device;
    kc::CudaStream stream;
    kc::CublasHandle blas;

    std::vector<Layer> layers;
    Matrix embd;                        // token_embd (first stage)
    Matrix output_own;                  // output.weight, or token_embd for a tied head off the first stage
    const kc::DeviceWeight* output = nullptr;
    kc::DeviceBuffer output_norm;       // [E]
    kc::DeviceBuffer kv;                // K of every layer, then V of every layer
    size_t kv_layer_bytes = 0;          // one layer's K (or V): n_seq * n_ctx * kv_dim * elt
    GgmlType kv_type = GgmlType::kF32;
    kc::DeviceBuffer rope;              // [n_ctx][n_rot] cos/sin
    kc::DeviceBuffer flags;             // [n_layers] NaN/Inf flag per layer
    kc::PinnedBuffer flags_host;
    uint64_t weight_bytes = 0;

    // Scratch, sized for the largest batch seen.
    int64_t cap = 0;
    kc::DeviceBuffer x, h, q, k, v, att, o, gu, m, ints;  // ints: [2][cap] pos | seq (or token ids)
    kc::PinnedBuffer ints_host;
    kc::DeviceBuffer ws, scores, logits;

    cudaStream_t s() const { return stream.get(); }

    [[noreturn]] void rethrow_oom(const Error& e) const {
        PIPELM_THROW(ErrorCode::kOutOfMemory, "stage ", spec.index, " (layers ", spec.first_layer, "..",
                     spec.last_layer - 1, ") on ", device_name(device), ": ", e.what(),
                     ". Use more pipeline stages (--stages / --split, or more GPUs in --devices), a smaller --ctx or "
                     "--parallel, --cache-type-k/--cache-type-v f16, or a quantized model (e.g. q8_0)");
    }

    kc::DeviceBuffer alloc(size_t bytes, const std::string& what) {
        try {
            return kc::DeviceBuffer(bytes, what.c_str());
        } catch (const Error& e) {
            if (e.code() == ErrorCode::kOutOfMemory) rethrow_oom(e);
            throw;
        }
    }

    void upload(void* dst, const void* src, size_t bytes) {
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s()));
    }

    Matrix upload_matrix(const std::string& name) {
        const gguf::TensorInfo& t = file->tensor(name);
        file->advise_willneed(t);
        Matrix mat;
        mat.w.cols = t.ne[0];
        mat.w.rows = t.ne[0] > 0 ? t.n_elements() / t.ne[0] : 0;
        kernels::check_row_length(t.type, mat.w.cols);  // a type pipelm computes with, whole blocks
        if (!kc::weight_type_supported(t.type))
            PIPELM_THROW(ErrorCode::kUnsupported, file->path(), ": tensor '", name, "' of type ",
                         ggml_type_name(t.type), " has no CUDA kernels (use --devices cpu for this stage)");
        mat.w.type = t.type;
        mat.w.row_bytes = ggml_row_bytes(t.type, mat.w.cols);
        const size_t bytes = mat.w.row_bytes * static_cast<size_t>(mat.w.rows);
        PIPELM_CHECK(bytes == t.bytes, file->path(), ": tensor '", name, "' has ", t.bytes, " bytes, expected ", bytes);
        mat.buf = alloc(bytes, "weight " + name);
        upload(mat.buf.get(), t.data, bytes);
        mat.w.data = mat.buf.get();
        weight_bytes += mat.buf.bytes();
        return mat;
    }

    // Appends the F32 vector `name` of n elements to `host` (as Glm4Stage::f32_tensor checks it).
    void append_f32(std::vector<float>& host, const std::string& name, int64_t n) {
        const gguf::TensorInfo& t = file->tensor(name);
        if (t.type != GgmlType::kF32 || t.n_elements() != n)
            PIPELM_THROW(ErrorCode::kFormat, file->path(), ": tensor '", name, "' must be F32 with ", n, " elements");
        const auto* p = reinterpret_cast<const float*>(t.data);
        host.insert(host.end(), p, p + n);
    }
    // Appends a bias of any supported type, dequantized (as Glm4Stage's dequant_vector).
    void append_any(std::vector<float>& host, const std::string& name, int64_t n) {
        const gguf::TensorInfo& t = file->tensor(name);
        PIPELM_CHECK(t.n_elements() == n, file->path(), ": tensor '", name, "' has ", t.n_elements(), " elements, expected ", n);
        const size_t at = host.size();
        host.resize(at + static_cast<size_t>(n));
        kernels::dequantize_row(t.type, t.data, host.data() + at, n);
    }

    uint64_t planned_bytes() const {
        uint64_t b = 0;
        auto add = [&](const std::string& name) { b += device_bytes_of(file->tensor(name)); };
        const int64_t E = cfg.n_embd;
        for (int l = spec.first_layer; l < spec.last_layer; ++l) {
            const std::string p = "blk." + std::to_string(l) + ".";
            for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"}) add(p + n + ".weight");
            b += (4 * E + (cfg.qkv_bias ? cfg.q_dim() + 2 * cfg.kv_dim() : 0)) * sizeof(float);
        }
        if (spec.has_embedding) add("token_embd.weight");
        if (spec.has_head) {
            b += E * sizeof(float);
            if (!cfg.tied_output) add("output.weight");
            else if (!spec.has_embedding) add("token_embd.weight");
        }
        return b;
    }

    void load() {
        const int64_t E = cfg.n_embd, Q = cfg.q_dim(), KV = cfg.kv_dim();
        const int n_layers = spec.last_layer - spec.first_layer;
        kv_type = opt.cache_type_k;
        const size_t kv_elt = kv_type == GgmlType::kF16 ? 2 : 4;
        kv_layer_bytes = static_cast<size_t>(opt.n_seq) * opt.n_ctx * KV * kv_elt;
        const uint64_t kv_total = 2ull * n_layers * kv_layer_bytes;
        const uint64_t rope_bytes = static_cast<uint64_t>(opt.n_ctx) * cfg.n_rot * sizeof(float);
        const uint64_t weights = planned_bytes();

        // Refuse up front, before any upload, when the plan cannot fit.
        size_t free_b = 0, total_b = 0;
        PIPELM_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        if (weights + kv_total + rope_bytes > free_b)
            PIPELM_THROW(ErrorCode::kOutOfMemory, "stage ", spec.index, " (layers ", spec.first_layer, "..",
                         spec.last_layer - 1, ") needs ", kc::mib(weights + kv_total + rope_bytes), " (",
                         weights + kv_total + rope_bytes, " bytes: weights ", kc::mib(weights), ", KV cache ",
                         kc::mib(kv_total), " for --ctx ", opt.n_ctx, " x --parallel ", opt.n_seq, ") on ",
                         device_name(device), ", which has ", kc::mib(free_b), " free of ", kc::mib(total_b),
                         ". Use more pipeline stages (--stages / --split, or more GPUs in --devices), a smaller --ctx, "
                         "--cache-type-k/--cache-type-v f16, or a quantized model (e.g. q8_0)");

        if (spec.has_embedding) embd = upload_matrix("token_embd.weight");
        for (int l = spec.first_layer; l < spec.last_layer; ++l) {
            const std::string p = "blk." + std::to_string(l) + ".";
            Layer L;
            std::vector<float> vec;
            append_f32(vec, p + "attn_norm.weight", E);
            append_f32(vec, p + "post_attention_norm.weight", E);
            append_f32(vec, p + "ffn_norm.weight", E);
            append_f32(vec, p + "post_ffw_norm.weight", E);
            if (cfg.qkv_bias) {
                append_any(vec, p + "attn_q.bias", Q);
                append_any(vec, p + "attn_k.bias", KV);
                append_any(vec, p + "attn_v.bias", KV);
            }
            L.vecs = alloc(vec.size() * sizeof(float), "norms of layer " + std::to_string(l));
            upload(L.vecs.get(), vec.data(), vec.size() * sizeof(float));
            weight_bytes += L.vecs.bytes();
            const float* base = L.vecs.as<float>();
            L.attn_norm = base;
            L.post_attn_norm = base + E;
            L.ffn_norm = base + 2 * E;
            L.post_ffw_norm = base + 3 * E;
            if (cfg.qkv_bias) {
                L.bq = base + 4 * E;
                L.bk = L.bq + Q;
                L.bv = L.bk + KV;
            }
            L.wq = upload_matrix(p + "attn_q.weight");
            L.wk = upload_matrix(p + "attn_k.weight");
            L.wv = upload_matrix(p + "attn_v.weight");
            L.wo = upload_matrix(p + "attn_output.weight");
            L.w_up = upload_matrix(p + "ffn_up.weight");
            L.w_down = upload_matrix(p + "ffn_down.weight");
            stream.synchronize();  // `vec` goes out of scope
            layers.push_back(std::move(L));
        }
        if (spec.has_head) {
            std::vector<float> norm;
            append_f32(norm, "output_norm.weight", E);
            output_norm = alloc(norm.size() * sizeof(float), "output_norm");
            upload(output_norm.get(), norm.data(), norm.size() * sizeof(float));
            weight_bytes += output_norm.bytes();
            if (cfg.tied_output && spec.has_embedding) {
                output = &embd.w;
            } else {
                output_own = upload_matrix(cfg.tied_output ? "token_embd.weight" : "output.weight");
                output = &output_own.w;
            }
            stream.synchronize();
        }
        if (n_layers > 0) {
            kv = alloc(static_cast<size_t>(kv_total), "the KV cache (" + std::to_string(n_layers) + " layers, --ctx " +
                                                          std::to_string(opt.n_ctx) + ")");
            PIPELM_CUDA_CHECK(cudaMemsetAsync(kv.get(), 0, kv.bytes(), s()));
            std::vector<float> cs(static_cast<size_t>(opt.n_ctx) * cfg.n_rot);
            kernels::rope_table(cs.data(), opt.n_ctx, cfg.n_rot, cfg.rope_base);
            rope = alloc(cs.size() * sizeof(float), "the RoPE table");
            upload(rope.get(), cs.data(), cs.size() * sizeof(float));
            flags = alloc(static_cast<size_t>(n_layers) * sizeof(int), "NaN/Inf flags");
            flags_host = kc::PinnedBuffer(static_cast<size_t>(n_layers) * sizeof(int));
            stream.synchronize();  // `cs` goes out of scope
        }
    }

    void* k_cache(int li) const { return kv.as<uint8_t>() + static_cast<size_t>(li) * kv_layer_bytes; }
    void* v_cache(int li) const {
        return kv.as<uint8_t>() + (layers.size() + static_cast<size_t>(li)) * kv_layer_bytes;
    }

    void ensure_tokens(int64_t n) {
        if (n <= cap) return;
        stream.synchronize();
        const int64_t E = cfg.n_embd, Q = cfg.q_dim(), KV = cfg.kv_dim(), F = cfg.n_ff;
        auto f32 = [&](int64_t count, const char* what) { return alloc(static_cast<size_t>(n * count) * sizeof(float), what); };
        x = f32(E, "activations");
        h = f32(E, "normed activations");
        q = f32(Q, "queries");
        k = f32(KV, "keys");
        v = f32(KV, "values");
        att = f32(Q, "attention output");
        o = f32(E, "projection output");
        gu = f32(2 * F, "FFN gate/up");
        m = f32(F, "FFN hidden");
        ints = alloc(static_cast<size_t>(2 * n) * sizeof(int32_t), "positions");
        ints_host = kc::PinnedBuffer(static_cast<size_t>(2 * n) * sizeof(int32_t));
        cap = n;
    }

    void ensure(kc::DeviceBuffer& buf, size_t bytes, const char* what) {
        if (bytes <= buf.bytes()) return;
        stream.synchronize();
        buf.reset();
        buf = alloc(bytes, what);
    }

    kc::Accum acc_attn_output() const { return accum_of(opt.precision.attn_output); }
    kc::Accum acc_ffn_down() const { return accum_of(opt.precision.ffn_down); }

    void ensure_layer_workspace(int64_t n) {
        size_t need = 0;
        for (const Layer& L : layers) {
            for (const Matrix* mat : {&L.wq, &L.wk, &L.wv, &L.w_up})
                need = std::max(need, kc::matmul_workspace_bytes(mat->w, n, kc::Accum::kF32));
            need = std::max(need, kc::matmul_workspace_bytes(L.wo.w, n, acc_attn_output()));
            need = std::max(need, kc::matmul_workspace_bytes(L.w_down.w, n, acc_ffn_down()));
        }
        ensure(ws, need, "matmul workspace");
    }

    void matmul(const Matrix& mat, const float* xin, int64_t ldx, float* y, int64_t ldy, int64_t n, kc::Accum acc) {
        kc::matmul(blas.get(), mat.w, xin, ldx, y, ldy, n, acc, ws.get(), ws.bytes(), s());
    }

    void layer_forward(int li, int64_t n, int max_kv, float* scores) {
        const Layer& L = layers[li];
        const int64_t E = cfg.n_embd, Q = cfg.q_dim(), KV = cfg.kv_dim(), F = cfg.n_ff;
        const int32_t* pos = ints.as<int32_t>();
        const int32_t* seq = pos + cap;
        float* xd = x.as<float>();
        float* hd = h.as<float>();
        float* qd = q.as<float>();
        float* kd = k.as<float>();
        float* vd = v.as<float>();
        float* od = o.as<float>();
        // Attention block.
        kc::rms_norm(xd, E, L.attn_norm, hd, E, n, E, cfg.eps, false, s());
        matmul(L.wq, hd, E, qd, Q, n, kc::Accum::kF32);
        matmul(L.wk, hd, E, kd, KV, n, kc::Accum::kF32);
        matmul(L.wv, hd, E, vd, KV, n, kc::Accum::kF32);
        if (L.bq) {
            kc::add_bias_rows(qd, Q, L.bq, n, Q, s());
            kc::add_bias_rows(kd, KV, L.bk, n, KV, s());
            kc::add_bias_rows(vd, KV, L.bv, n, KV, s());
        }
        kc::rope_norm(qd, Q, n, cfg.n_head, cfg.head_dim, cfg.n_rot, pos, rope.as<float>(), s());
        kc::rope_norm(kd, KV, n, cfg.n_head_kv, cfg.head_dim, cfg.n_rot, pos, rope.as<float>(), s());
        kc::kv_store(kd, KV, vd, KV, n, KV, pos, seq, opt.n_ctx, kv_type, k_cache(li), v_cache(li), s());
        kc::AttentionArgs a;
        a.q = qd;
        a.ldq = Q;
        a.out = att.as<float>();
        a.ldo = Q;
        a.n_tokens = n;
        a.n_head = cfg.n_head;
        a.n_head_kv = cfg.n_head_kv;
        a.head_dim = cfg.head_dim;
        a.scale = 1.0f / std::sqrt(static_cast<float>(cfg.head_dim));
        a.k_cache = k_cache(li);
        a.v_cache = v_cache(li);
        a.n_ctx = opt.n_ctx;
        a.kv_type = kv_type;
        a.pos = pos;
        a.seq = seq;
        a.max_kv = max_kv;
        a.scores = scores;
        a.kq = accum_of(opt.precision.kq);
        a.softmax_v = accum_of(opt.precision.softmax_v);
        kc::attention(a, s());
        matmul(L.wo, att.as<float>(), Q, od, E, n, acc_attn_output());
        kc::rms_norm(od, E, L.post_attn_norm, xd, E, n, E, cfg.eps, true, s());  // x += post_attention_norm(o)
        // FFN block.
        kc::rms_norm(xd, E, L.ffn_norm, hd, E, n, E, cfg.eps, false, s());
        matmul(L.w_up, hd, E, gu.as<float>(), 2 * F, n, kc::Accum::kF32);
        kc::swiglu(gu.as<float>(), m.as<float>(), n, F, s());
        matmul(L.w_down, m.as<float>(), F, od, E, n, acc_ffn_down());
        kc::rms_norm(od, E, L.post_ffw_norm, xd, E, n, E, cfg.eps, true, s());  // x += post_ffw_norm(f)
    }

    std::string numerics_hint() const {
        const PrecisionPolicy& p = opt.precision;
        if (p.kq == Precision::kF16 || p.softmax_v == Precision::kF16)
            return "with --attn-precision f16: K·Q overflowed FP16; use the default f32";
        if (p.kq != Precision::kF32 || p.softmax_v != Precision::kF32 || p.attn_output != Precision::kF32 ||
            p.ffn_down != Precision::kF32)
            return std::string("the precision policy is below FP32 (kq ") + precision_name(p.kq) + ", softmax_v " +
                   precision_name(p.softmax_v) + ", attn_output " + precision_name(p.attn_output) + ", ffn_down " +
                   precision_name(p.ffn_down) + "); use the default f32";
        return "the weights or inputs are corrupt or the precision is too low (keep --attn-precision f32)";
    }

    void forward(float* xh, const Batch& b) {
        const int64_t n = b.n_tokens, E = cfg.n_embd;
        const int n_layers = static_cast<int>(layers.size());
        ensure_tokens(n);
        ensure_layer_workspace(n);
        int32_t* ih = ints_host.as<int32_t>();
        int max_kv = 0;
        for (int64_t t = 0; t < n; ++t) {
            ih[t] = b.pos[t];
            ih[cap + t] = b.seq[t];
            max_kv = std::max(max_kv, b.pos[t] + 1);
        }
        float* scores = nullptr;
        if (!kc::attention_scores_fit_shared(cfg.head_dim, max_kv)) {
            ensure(this->scores, static_cast<size_t>(n) * cfg.n_head * max_kv * sizeof(float), "attention scores");
            scores = this->scores.as<float>();
        }
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(ints.get(), ih, static_cast<size_t>(2 * cap) * sizeof(int32_t),
                                          cudaMemcpyHostToDevice, s()));
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(x.get(), xh, static_cast<size_t>(n * E) * sizeof(float),
                                          cudaMemcpyHostToDevice, s()));
        if (opt.check_finite) PIPELM_CUDA_CHECK(cudaMemsetAsync(flags.get(), 0, flags.bytes(), s()));
        for (int l = 0; l < n_layers; ++l) {
            layer_forward(l, n, max_kv, scores);
            if (opt.check_finite) kc::check_finite(x.as<float>(), n * E, flags.as<int>() + l, s());
        }
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(xh, x.get(), static_cast<size_t>(n * E) * sizeof(float),
                                          cudaMemcpyDeviceToHost, s()));
        if (opt.check_finite)
            PIPELM_CUDA_CHECK(cudaMemcpyAsync(flags_host.as<int>(), flags.get(), flags.bytes(), cudaMemcpyDeviceToHost, s()));
        stream.synchronize();
        if (!opt.check_finite) return;
        for (int l = 0; l < n_layers; ++l)
            if (flags_host.as<int>()[l])
                PIPELM_THROW(ErrorCode::kNumerics, "stage ", spec.index, ", layer ", spec.first_layer + l,
                             ": non-finite activations (NaN/Inf) after the layer on ", device_name(device), " (",
                             numerics_hint(), ")");
    }

    void embed(const int32_t* tokens, int64_t n, float* xh) {
        ensure_tokens(n);
        int32_t* ih = ints_host.as<int32_t>();
        std::memcpy(ih, tokens, static_cast<size_t>(n) * sizeof(int32_t));
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(ints.get(), ih, static_cast<size_t>(n) * sizeof(int32_t),
                                          cudaMemcpyHostToDevice, s()));
        kc::embedding(embd.w.type, embd.w.data, embd.w.row_bytes, ints.as<int32_t>(), n, cfg.n_embd, x.as<float>(), s());
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(xh, x.get(), static_cast<size_t>(n * cfg.n_embd) * sizeof(float),
                                          cudaMemcpyDeviceToHost, s()));
        stream.synchronize();
    }

    void head(const float* xh, int64_t n, float* logits_h) {
        const int64_t E = cfg.n_embd, V = cfg.n_vocab;
        ensure_tokens(n);
        ensure(ws, kc::matmul_workspace_bytes(*output, n, kc::Accum::kF32), "matmul workspace");
        ensure(logits, static_cast<size_t>(n * V) * sizeof(float), "logits");
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(x.get(), xh, static_cast<size_t>(n * E) * sizeof(float),
                                          cudaMemcpyHostToDevice, s()));
        kc::rms_norm(x.as<float>(), E, output_norm.as<float>(), h.as<float>(), E, n, E, cfg.eps, false, s());
        kc::matmul(blas.get(), *output, h.as<float>(), E, logits.as<float>(), V, n, kc::Accum::kF32, ws.get(), ws.bytes(),
                   s());
        PIPELM_CUDA_CHECK(cudaMemcpyAsync(logits_h, logits.get(), static_cast<size_t>(n * V) * sizeof(float),
                                          cudaMemcpyDeviceToHost, s()));
        stream.synchronize();
    }
};

CudaGlm4Stage::CudaGlm4Stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg, const StageSpec& spec,
                             const StageOptions& opt, int device_ordinal)
    : cfg_(cfg), spec_(spec), device_(device_ordinal) {
    PIPELM_CHECK(spec.first_layer >= 0 && spec.first_layer <= spec.last_layer && spec.last_layer <= cfg.n_layer,
                 "stage ", spec.index, ": layer range [", spec.first_layer, ", ", spec.last_layer,
                 ") is outside the model's ", cfg.n_layer, " layers");
    PIPELM_CHECK(opt.n_ctx > 0 && opt.n_seq > 0, "stage ", spec.index, ": --ctx and --parallel must be positive");
    if (opt.cache_type_k != opt.cache_type_v)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--cache-type-k and --cache-type-v must currently be equal");
    if (opt.cache_type_k != GgmlType::kF32 && opt.cache_type_k != GgmlType::kF16)
        PIPELM_THROW(ErrorCode::kUnsupported, "stage ", spec.index, ": the CUDA backend keeps the KV cache as f32 or f16, not ",
                     ggml_type_name(opt.cache_type_k), " (use --cache-type-k/--cache-type-v f32 or f16)");

    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        PIPELM_THROW(ErrorCode::kCuda, "no CUDA device cuda:", device_ordinal, ": ", cudaGetErrorString(e), " (",
                     cudaGetErrorName(e), "; stage ", spec.index,
                     "): check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use --devices cpu");
    }
    if (device_ordinal < 0 || device_ordinal >= count)
        PIPELM_THROW(ErrorCode::kCuda, "no CUDA device cuda:", device_ordinal, ": this machine has ", count,
                     " CUDA device(s)", count > 0 ? " (cuda:0 .. cuda:" + std::to_string(count - 1) + ")" : std::string(),
                     " (stage ", spec.index, "); name an existing device in --devices, or cpu");

    kc::DeviceGuard guard(device_);
    kc::check_device_supported();
    impl_ = std::make_unique<Impl>(std::move(file), cfg, spec, opt, device_);
    impl_->load();
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device_) == cudaSuccess)
        PIPELM_DEBUG("stage ", spec.index, ": ", device_name(device_), " ", prop.name, ", weights ",
                     kc::mib(impl_->weight_bytes), ", KV cache ", kc::mib(impl_->kv.bytes()));
    else
        (void)cudaGetLastError();
}

CudaGlm4Stage::~CudaGlm4Stage() {
    if (!impl_) return;
    int prev = -1;
    if (cudaGetDevice(&prev) != cudaSuccess) (void)cudaGetLastError();
    if (prev != device_) PIPELM_CUDA_WARN(cudaSetDevice(device_));
    PIPELM_CUDA_WARN(cudaStreamSynchronize(impl_->s()));
    impl_.reset();
    if (prev >= 0 && prev != device_) PIPELM_CUDA_WARN(cudaSetDevice(prev));
}

uint64_t CudaGlm4Stage::weight_bytes() const { return impl_->weight_bytes; }
uint64_t CudaGlm4Stage::kv_bytes() const { return impl_->kv.bytes(); }

void CudaGlm4Stage::embed(const int32_t* tokens, int64_t n, float* x) {
    PIPELM_CHECK(spec_.has_embedding, "stage ", spec_.index, " has no embedding");
    for (int64_t t = 0; t < n; ++t) {
        const int32_t id = tokens[t];
        if (id < 0 || id >= cfg_.n_vocab)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "token id ", id, " at position ", t, " is outside the vocabulary [0, ",
                         cfg_.n_vocab, ")");
    }
    if (n <= 0) return;
    kc::DeviceGuard guard(device_);
    impl_->embed(tokens, n, x);
}

void CudaGlm4Stage::forward(float* x, const Batch& b) {
    for (int64_t t = 0; t < b.n_tokens; ++t) {
        if (b.pos[t] < 0 || b.pos[t] >= impl_->opt.n_ctx)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "position ", b.pos[t], " is outside the context of ",
                         impl_->opt.n_ctx, " tokens: raise --ctx");
        if (b.seq[t] < 0 || b.seq[t] >= impl_->opt.n_seq)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "sequence slot ", b.seq[t], " is outside [0, ", impl_->opt.n_seq, ")");
    }
    if (b.n_tokens <= 0 || impl_->layers.empty()) return;
    kc::DeviceGuard guard(device_);
    impl_->forward(x, b);
}

void CudaGlm4Stage::head(const float* x, int64_t n_rows, float* logits) {
    PIPELM_CHECK(spec_.has_head, "stage ", spec_.index, " has no lm_head");
    if (n_rows <= 0) return;
    kc::DeviceGuard guard(device_);
    impl_->head(x, n_rows, logits);
}

}  // namespace pipelm::model
