#include "runtime/model/mkmodel.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cmath>
#include <thread>
#include <vector>

#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/base/fp16.h"
#include "runtime/gguf/gguf_writer.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/tensors.h"

namespace pipelm::model {
namespace {

// The hyperparameters of a file mkmodel writes for spec s (it always writes output.weight).
Glm4Config spec_config(const MkModelSpec& s) {
    Glm4Config c;
    c.n_layer = s.n_layer;
    c.n_embd = s.n_embd;
    c.n_head = s.n_head;
    c.n_head_kv = s.n_head_kv;
    c.head_dim = s.head_dim;
    c.n_rot = s.n_rot;
    c.n_ff = s.n_ff;
    c.n_vocab = s.n_vocab;
    c.qkv_bias = s.qkv_bias;
    c.tied_output = false;
    return c;
}

struct FtypeInfo {
    Ftype ftype;
    const char* name;
    GgmlType base;
    uint32_t llama_code;  // LLAMA_FTYPE_MOSTLY_* (llama.h)
};

// Listed in this order by --help and by errors.
constexpr FtypeInfo kFtypes[] = {
    {Ftype::kF32, "f32", GgmlType::kF32, 0},           {Ftype::kF16, "f16", GgmlType::kF16, 1},
    {Ftype::kBF16, "bf16", GgmlType::kBF16, 32},       {Ftype::kQ8_0, "q8_0", GgmlType::kQ8_0, 7},
    {Ftype::kQ4_0, "q4_0", GgmlType::kQ4_0, 2},        {Ftype::kQ4_1, "q4_1", GgmlType::kQ4_1, 3},
    {Ftype::kQ5_0, "q5_0", GgmlType::kQ5_0, 8},        {Ftype::kQ5_1, "q5_1", GgmlType::kQ5_1, 9},
    {Ftype::kIQ4_NL, "iq4_nl", GgmlType::kIQ4_NL, 25}, {Ftype::kIQ4_XS, "iq4_xs", GgmlType::kIQ4_XS, 30},
    {Ftype::kQ4_K_S, "q4_k_s", GgmlType::kQ4_K, 14},   {Ftype::kQ4_K_M, "q4_k_m", GgmlType::kQ4_K, 15},
    {Ftype::kQ5_K_S, "q5_k_s", GgmlType::kQ5_K, 16},   {Ftype::kQ5_K_M, "q5_k_m", GgmlType::kQ5_K, 17},
    {Ftype::kQ6_K, "q6_k", GgmlType::kQ6_K, 18},
};

const FtypeInfo& ftype_info(Ftype f) {
    for (const auto& e : kFtypes)
        if (e.ftype == f) return e;
    PIPELM_THROW(ErrorCode::kInternal, "ftype ", static_cast<int>(f), " has no table entry");
}

uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

// Uniform in [-a, a) with standard deviation `std`, from a per-row counter-based generator.
void random_row(uint64_t seed, uint64_t tensor, uint64_t row, float std, float* out, int64_t n) {
    uint64_t s = mix(seed * 0x9e3779b97f4a7c15ull ^ mix(tensor * 1315423911ull + row + 1));
    const float a = std * 1.7320508f;
    for (int64_t i = 0; i < n; ++i) {
        s = mix(s + 0x9e3779b97f4a7c15ull);
        const float u = static_cast<float>(s >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        out[i] = (2.f * u - 1.f) * a;
    }
}


std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) s += static_cast<char>(cp);
    else if (cp < 0x800) {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        s += static_cast<char>(0xE0 | (cp >> 12));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
}

// GPT-2 byte -> printable code point mapping.
std::vector<std::string> byte_tokens() {
    std::vector<std::string> tok(256);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        tok[b] = utf8(direct ? b : 256 + extra++);
    }
    return tok;
}

const char* kSpecials[] = {"<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>",
                           "<eop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"};

const char* kChatTemplate =
    "[gMASK]<sop>{%- for msg in messages %}{%- if msg.role == 'system' %}<|system|>\n{{ msg.content }}{%- endif %}"
    "{%- endfor %}{%- for message in messages if message.role != 'system' %}<|{{ message.role }}|>\n"
    "{{ message.content }}{%- endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

}  // namespace

MkModelSpec mkmodel_preset(const std::string& name) {
    MkModelSpec s;
    if (name == "tiny") return s;  // the glm4-tiny test shape
    if (name == "bench") {
        s.n_layer = 61; s.n_embd = 1024; s.n_head = 8; s.n_head_kv = 1; s.head_dim = 128; s.n_rot = 64;
        s.n_ff = 3840; s.n_vocab = 151552; s.qkv_bias = false; s.dtype = GgmlType::kF16;
        return s;
    }
    if (name == "small") {
        s.n_layer = 8; s.n_embd = 256; s.n_head = 4; s.n_head_kv = 1; s.head_dim = 64; s.n_rot = 32;
        s.n_ff = 512; s.n_vocab = 4096; s.qkv_bias = false;
        return s;
    }
    if (name == "glm4-9b") {
        s.n_layer = 40; s.n_embd = 4096; s.n_head = 32; s.n_head_kv = 2; s.head_dim = 128; s.n_rot = 64;
        s.n_ff = 13696; s.n_vocab = 151552; s.qkv_bias = true; s.dtype = GgmlType::kBF16; s.n_ctx = 32768;
        return s;
    }
    if (name == "glm4-32b") {
        s.n_layer = 61; s.n_embd = 6144; s.n_head = 48; s.n_head_kv = 2; s.head_dim = 128; s.n_rot = 64;
        s.n_ff = 23040; s.n_vocab = 151552; s.qkv_bias = false; s.dtype = GgmlType::kBF16; s.n_ctx = 32768;
        return s;
    }
    PIPELM_THROW(ErrorCode::kInvalidArgument, "--preset ", name, ": unknown (use ", mkmodel_presets(), ")");
}

std::string mkmodel_presets() { return "tiny, small, bench, glm4-9b, glm4-32b"; }

Ftype parse_ftype(const std::string& name) {
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const auto& e : kFtypes)
        if (lower == e.name) return e.ftype;
    PIPELM_THROW(ErrorCode::kInvalidArgument, "--ftype ", name, ": unknown file type (use ", ftype_names(), ")");
}

const char* ftype_name(Ftype f) { return ftype_info(f).name; }

std::string ftype_names() {
    std::string s;
    for (const auto& e : kFtypes) s += std::string(s.empty() ? "" : ", ") + e.name;
    return s;
}

void encode_weight_row(GgmlType t, const float* src, uint8_t* dst, int64_t n) {
    switch (t) {
        case GgmlType::kF32: std::memcpy(dst, src, n * 4); break;
        case GgmlType::kF16:
            for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_fp16(src[i]);
            break;
        case GgmlType::kBF16:
            for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
            break;
        default: kernels::quantize_row(t, src, dst, n); break;
    }
}

GgmlType ftype_base_type(Ftype f) { return ftype_info(f).base; }

uint32_t ftype_llama_code(Ftype f) { return ftype_info(f).llama_code; }

// llama_tensor_get_type (llama.cpp src/llama-quant.cpp) for the rules that reach these file
// types on a dense GLM-4 without an importance matrix; attn_v and ffn_down count layers, as
// llama.cpp's i_attention_wv / i_ffn_down do when tensors are in block order.
GgmlType ftype_tensor_type(Ftype f, TensorId id, int64_t ne0, int layer, const MkModelSpec& s) {
    const GgmlType base = ftype_base_type(f);
    // llama-quantize applies its rules only when the file type is a quantized one.
    if (base == GgmlType::kF32 || base == GgmlType::kF16 || base == GgmlType::kBF16) return base;
    auto fits = [ne0](GgmlType t) { return ne0 % ggml_type_info(t).block == 0; };
    const int n = s.n_layer;
    auto use_more_bits = [n](int i) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; };
    const bool k_m = f == Ftype::kQ4_K_M || f == Ftype::kQ5_K_M;
    const bool iq4 = f == Ftype::kIQ4_NL || f == Ftype::kIQ4_XS;
    GgmlType t = base;
    if (id == TensorId::kOutput) {
        if (!fits(base)) t = GgmlType::kQ8_0;
        else if (base != GgmlType::kQ8_0) t = GgmlType::kQ6_K;
    } else if (id == TensorId::kTokenEmbd) {
        // the base type
    } else if (id == TensorId::kAttnV) {
        const int n_gqa = s.n_head / s.n_head_kv;
        if (iq4 && n_gqa >= 4) t = GgmlType::kQ5_K;
        else if (k_m && use_more_bits(layer)) t = GgmlType::kQ6_K;
        else if (f == Ftype::kQ4_K_S && layer < 4) t = GgmlType::kQ5_K;
    } else if (id == TensorId::kFfnDown) {
        if (k_m && use_more_bits(layer)) t = GgmlType::kQ6_K;
        else if (iq4 && layer < n / 8) t = GgmlType::kQ5_K;  // llama.cpp: only without an imatrix
        else if (f == Ftype::kQ4_K_S && layer < n / 8) t = GgmlType::kQ5_K;
    }
    if (fits(t)) return t;
    // tensor_type_fallback: a row the 256-blocks cannot hold takes a 32-block type, then F16.
    switch (t) {
        case GgmlType::kIQ4_XS: t = GgmlType::kIQ4_NL; break;
        case GgmlType::kQ4_K: t = GgmlType::kQ5_0; break;
        case GgmlType::kQ5_K: t = GgmlType::kQ5_1; break;
        case GgmlType::kQ6_K: t = GgmlType::kQ8_0; break;
        default:
            PIPELM_THROW(ErrorCode::kInvalidArgument, "mkmodel: --ftype ", ftype_name(f), ": ", tensor_name(id, layer), " has rows of ",
                         ne0, " values, not a multiple of ", ggml_type_name(t), "'s block of ",
                         ggml_type_info(t).block);
    }
    return fits(t) ? t : GgmlType::kF16;
}

Glm4Config mkmodel_config(const MkModelSpec& spec) { return spec_config(spec); }

std::map<std::string, GgmlType> ftype_tensor_types(Ftype f, const Glm4Config& c) {
    MkModelSpec spec;
    spec.n_layer = c.n_layer;
    spec.n_head = c.n_head;
    spec.n_head_kv = c.n_head_kv;
    std::map<std::string, GgmlType> types;
    for_each_tensor(c, c.n_layer, [&](TensorId id, int l) {
        if (tensor_def(id).kind == TensorKind::kMatrix)
            types[tensor_name(id, l)] = ftype_tensor_type(f, id, tensor_shape(id, c)[0], l, spec);
    });
    return types;
}

// general.file_type holds llama.cpp's llama_ftype code ("mostly <type>"), not the ggml type id.
uint32_t dtype_llama_code(GgmlType t) {
    switch (t) {
        case GgmlType::kF32: return 0;
        case GgmlType::kF16: return 1;
        case GgmlType::kQ4_0: return 2;
        case GgmlType::kQ4_1: return 3;
        case GgmlType::kQ8_0: return 7;
        case GgmlType::kQ5_0: return 8;
        case GgmlType::kQ5_1: return 9;
        case GgmlType::kQ4_K: return 15;  // Q4_K_M
        case GgmlType::kQ5_K: return 17;  // Q5_K_M
        case GgmlType::kQ6_K: return 18;
        case GgmlType::kIQ4_NL: return 25;
        case GgmlType::kIQ4_XS: return 30;
        case GgmlType::kBF16: return 32;
        default: return 0;
    }
}

GgmlType mkmodel_matrix_type(const MkModelSpec& s, TensorId id, int64_t ne0, int layer) {
    return s.ftype ? ftype_tensor_type(*s.ftype, id, ne0, layer, s) : s.dtype;
}

// The parameters of the tensors mkmodel_write writes (the weight table's, for this shape).
uint64_t mkmodel_params(const MkModelSpec& s) {
    const Glm4Config cfg = spec_config(s);
    uint64_t n = 0;
    for_each_tensor(cfg, s.n_layer, [&](TensorId id, int) {
        uint64_t e = 1;
        for (int64_t d : tensor_shape(id, cfg)) e *= static_cast<uint64_t>(d);
        n += e;
    });
    return n;
}

void mkmodel_write(const MkModelSpec& s, const std::string& path, int n_threads) {
    PIPELM_CHECK(s.n_layer > 0 && s.n_embd > 0 && s.n_head > 0 && s.n_head_kv > 0 && s.head_dim > 0 && s.n_ff > 0,
                 "mkmodel: every dimension must be positive");
    PIPELM_CHECK(s.n_head % s.n_head_kv == 0, "mkmodel: --heads ", s.n_head, " must be a multiple of --kv-heads ",
                 s.n_head_kv);
    PIPELM_CHECK(s.n_rot % 2 == 0 && s.n_rot <= s.head_dim, "mkmodel: --rope-dim must be even and <= --head-dim");
    PIPELM_CHECK(s.n_vocab >= 266, "mkmodel: --vocab must be at least 266 (256 bytes + 10 special tokens)");
    const int64_t E = s.n_embd, Q = int64_t(s.n_head) * s.head_dim;
    if (!s.ftype) {
        const int64_t blk = ggml_type_info(s.dtype).block;
        for (int64_t cols : {E, Q, int64_t(s.n_ff)})
            PIPELM_CHECK(cols % blk == 0, "mkmodel: --dtype ", ggml_type_name(s.dtype), " needs every row length (",
                         E, ", ", Q, ", ", s.n_ff, ") to be a multiple of ", blk);
    }

    gguf::GgufWriter w;
    w.set_string("general.architecture", "glm4");
    w.set_string("general.name", "pipelm random GLM-4 (mkmodel)");
    w.set_u32("general.file_type", s.ftype ? ftype_llama_code(*s.ftype) : dtype_llama_code(s.dtype));
    w.set_u32("glm4.context_length", s.n_ctx);
    w.set_u32("glm4.embedding_length", s.n_embd);
    w.set_u32("glm4.feed_forward_length", s.n_ff);
    w.set_u32("glm4.block_count", s.n_layer);
    w.set_u32("glm4.attention.head_count", s.n_head);
    w.set_u32("glm4.attention.head_count_kv", s.n_head_kv);
    w.set_u32("glm4.attention.key_length", s.head_dim);
    w.set_u32("glm4.attention.value_length", s.head_dim);
    w.set_f32("glm4.attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_u32("glm4.rope.dimension_count", s.n_rot);
    w.set_f32("glm4.rope.freq_base", 10000.f);
    std::vector<std::string> tokens = byte_tokens();
    std::vector<int32_t> types(256, 1);  // NORMAL, as real GLM-4 files (llama.cpp reads BYTE as <0xXX>)
    const int n_fill = s.n_vocab - 256 - 10;
    for (int i = 0; i < n_fill; ++i) {
        tokens.push_back("[PAD" + std::to_string(256 + i) + "]");
        types.push_back(5);
    }
    for (const char* sp : kSpecials) {
        tokens.push_back(sp);
        types.push_back(3);
    }
    const int32_t base = s.n_vocab - 10;
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string("tokenizer.ggml.pre", "glm4");
    w.set_string_array("tokenizer.ggml.tokens", tokens);
    w.set_i32_array("tokenizer.ggml.token_type", types);
    w.set_string_array("tokenizer.ggml.merges", {});
    w.set_u32("tokenizer.ggml.eos_token_id", base + 0);
    w.set_u32("tokenizer.ggml.padding_token_id", base + 0);
    w.set_u32("tokenizer.ggml.unknown_token_id", base + 0);
    w.set_u32("tokenizer.ggml.bos_token_id", base + 2);
    w.set_u32("tokenizer.ggml.eot_token_id", base + 7);
    w.set_string("tokenizer.chat_template", kChatTemplate);

    uint64_t tensor_id = 0;
    // A 2-D weight of block `layer` (-1: embedding, output): --dtype's type or --ftype's choice.
    auto matrix = [&](TensorId tid, const std::string& name, int64_t cols, int64_t rows, int layer, float std) {
        const uint64_t id = tensor_id++;
        const GgmlType t = mkmodel_matrix_type(s, tid, cols, layer);
        const size_t rb = ggml_row_bytes(t, cols);
        w.add_tensor(name, t, {cols, rows}, [=](uint8_t* dst) {
            const int nt = std::max<int>(1, std::min<int64_t>(n_threads, rows));
            std::vector<std::thread> th;
            for (int k = 0; k < nt; ++k)
                th.emplace_back([=] {
                    std::vector<float> row(cols);
                    for (int64_t r = rows * k / nt; r < rows * (k + 1) / nt; ++r) {
                        random_row(s.seed, id, r, std, row.data(), cols);
                        encode_weight_row(t, row.data(), dst + r * rb, cols);
                    }
                });
            for (auto& x : th) x.join();
        });
    };
    auto vec = [&](const std::string& name, int64_t n, float center, float std) {
        const uint64_t id = tensor_id++;
        w.add_tensor(name, GgmlType::kF32, {n}, [=](uint8_t* dst) {
            std::vector<float> v(n);
            random_row(s.seed, id, 0, std, v.data(), n);
            for (auto& x : v) x += center;
            std::memcpy(dst, v.data(), n * 4);
        });
    };
    // The weight table gives names, shapes and order; mkmodel adds only the random init.
    const Glm4Config cfg = spec_config(s);
    for_each_tensor(cfg, s.n_layer, [&](TensorId id, int layer) {
        const std::string name = tensor_name(id, layer);
        const std::vector<int64_t> ne = tensor_shape(id, cfg);
        switch (tensor_def(id).kind) {
            case TensorKind::kMatrix:
                matrix(id, name, ne[0], ne[1], layer, id == TensorId::kTokenEmbd ? 1.0f : s.weight_std);
                break;
            case TensorKind::kNorm: vec(name, ne[0], 1.f, 0.1f); break;
            case TensorKind::kBias: vec(name, ne[0], 0.f, 0.1f); break;
        }
    });
    w.write(path);
}

}  // namespace pipelm::model
