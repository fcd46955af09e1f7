// `mkmodel --ftype`: the per-tensor types of llama-quantize's file types. mkmodel_write of the
// glm4-quant shape must give every tensor the type llama.cpp's own quantizer gave it, and the
// layer rules (use_more_bits, q4_k_s, iq4 without an imatrix, the 256-row fallbacks) must hold
// at the sizes of real models.
#include <set>
#include <sstream>

#include "tests/runtime/gguf_test_util.h"

namespace pipelm {
namespace {

using model::Ftype;
using model::TensorId;

// The type of every 2-D weight in the files llama.cpp's llama-quantize (commit 34af94cd, no
// imatrix) made from the F32 glm4-quant models: shared/testdata/models/<file> (copies in
// tests/data/models/), read with `pipelm inspect -m FILE`. ".weight" is left off the names; every
// other tensor (the 9 norms) is f32 in each file.
struct Reference {
    const char* file;
    const char* ftype;
    int n_ff;
    uint32_t file_type;  // general.file_type
    int n_tensors;
    const char* types;  // "name:type ..."
};

const Reference kReferences[] = {
    {"glm4-quant/model-iq4_nl.gguf", "iq4_nl", 512, 25, 23,
        "output:q6_K token_embd:iq4_nl blk.0.attn_k:iq4_nl blk.0.attn_output:iq4_nl blk.0.attn_q:iq4_nl "
        "blk.0.attn_v:q5_K blk.0.ffn_down:iq4_nl blk.0.ffn_up:iq4_nl blk.1.attn_k:iq4_nl "
        "blk.1.attn_output:iq4_nl blk.1.attn_q:iq4_nl blk.1.attn_v:q5_K blk.1.ffn_down:iq4_nl "
        "blk.1.ffn_up:iq4_nl"},
    {"glm4-quant/model-iq4_xs.gguf", "iq4_xs", 512, 30, 23,
        "output:q6_K token_embd:iq4_xs blk.0.attn_k:iq4_xs blk.0.attn_output:iq4_xs blk.0.attn_q:iq4_xs "
        "blk.0.attn_v:q5_K blk.0.ffn_down:iq4_xs blk.0.ffn_up:iq4_xs blk.1.attn_k:iq4_xs "
        "blk.1.attn_output:iq4_xs blk.1.attn_q:iq4_xs blk.1.attn_v:q5_K blk.1.ffn_down:iq4_xs "
        "blk.1.ffn_up:iq4_xs"},
    {"glm4-quant/model-q4_0.gguf", "q4_0", 512, 2, 23,
        "output:q6_K token_embd:q4_0 blk.0.attn_k:q4_0 blk.0.attn_output:q4_0 blk.0.attn_q:q4_0 "
        "blk.0.attn_v:q4_0 blk.0.ffn_down:q4_0 blk.0.ffn_up:q4_0 blk.1.attn_k:q4_0 blk.1.attn_output:q4_0 "
        "blk.1.attn_q:q4_0 blk.1.attn_v:q4_0 blk.1.ffn_down:q4_0 blk.1.ffn_up:q4_0"},
    {"glm4-quant/model-q4_1.gguf", "q4_1", 512, 3, 23,
        "output:q6_K token_embd:q4_1 blk.0.attn_k:q4_1 blk.0.attn_output:q4_1 blk.0.attn_q:q4_1 "
        "blk.0.attn_v:q4_1 blk.0.ffn_down:q4_1 blk.0.ffn_up:q4_1 blk.1.attn_k:q4_1 blk.1.attn_output:q4_1 "
        "blk.1.attn_q:q4_1 blk.1.attn_v:q4_1 blk.1.ffn_down:q4_1 blk.1.ffn_up:q4_1"},
    {"glm4-quant/model-q4_k_m.gguf", "q4_k_m", 512, 15, 23,
        "output:q6_K token_embd:q4_K blk.0.attn_k:q4_K blk.0.attn_output:q4_K blk.0.attn_q:q4_K "
        "blk.0.attn_v:q4_K blk.0.ffn_down:q4_K blk.0.ffn_up:q4_K blk.1.attn_k:q4_K blk.1.attn_output:q4_K "
        "blk.1.attn_q:q4_K blk.1.attn_v:q6_K blk.1.ffn_down:q6_K blk.1.ffn_up:q4_K"},
    {"glm4-quant/model-q5_0.gguf", "q5_0", 512, 8, 23,
        "output:q6_K token_embd:q5_0 blk.0.attn_k:q5_0 blk.0.attn_output:q5_0 blk.0.attn_q:q5_0 "
        "blk.0.attn_v:q5_0 blk.0.ffn_down:q5_0 blk.0.ffn_up:q5_0 blk.1.attn_k:q5_0 blk.1.attn_output:q5_0 "
        "blk.1.attn_q:q5_0 blk.1.attn_v:q5_0 blk.1.ffn_down:q5_0 blk.1.ffn_up:q5_0"},
    {"glm4-quant/model-q5_1.gguf", "q5_1", 512, 9, 23,
        "output:q6_K token_embd:q5_1 blk.0.attn_k:q5_1 blk.0.attn_output:q5_1 blk.0.attn_q:q5_1 "
        "blk.0.attn_v:q5_1 blk.0.ffn_down:q5_1 blk.0.ffn_up:q5_1 blk.1.attn_k:q5_1 blk.1.attn_output:q5_1 "
        "blk.1.attn_q:q5_1 blk.1.attn_v:q5_1 blk.1.ffn_down:q5_1 blk.1.ffn_up:q5_1"},
    {"glm4-quant/model-q5_k_m.gguf", "q5_k_m", 512, 17, 23,
        "output:q6_K token_embd:q5_K blk.0.attn_k:q5_K blk.0.attn_output:q5_K blk.0.attn_q:q5_K "
        "blk.0.attn_v:q5_K blk.0.ffn_down:q5_K blk.0.ffn_up:q5_K blk.1.attn_k:q5_K blk.1.attn_output:q5_K "
        "blk.1.attn_q:q5_K blk.1.attn_v:q6_K blk.1.ffn_down:q6_K blk.1.ffn_up:q5_K"},
    {"glm4-quant/model-q6_k.gguf", "q6_k", 512, 18, 23,
        "output:q6_K token_embd:q6_K blk.0.attn_k:q6_K blk.0.attn_output:q6_K blk.0.attn_q:q6_K "
        "blk.0.attn_v:q6_K blk.0.ffn_down:q6_K blk.0.ffn_up:q6_K blk.1.attn_k:q6_K blk.1.attn_output:q6_K "
        "blk.1.attn_q:q6_K blk.1.attn_v:q6_K blk.1.ffn_down:q6_K blk.1.ffn_up:q6_K"},
    {"glm4-quant/model-q8_0.gguf", "q8_0", 512, 7, 23,
        "output:q8_0 token_embd:q8_0 blk.0.attn_k:q8_0 blk.0.attn_output:q8_0 blk.0.attn_q:q8_0 "
        "blk.0.attn_v:q8_0 blk.0.ffn_down:q8_0 blk.0.ffn_up:q8_0 blk.1.attn_k:q8_0 blk.1.attn_output:q8_0 "
        "blk.1.attn_q:q8_0 blk.1.attn_v:q8_0 blk.1.ffn_down:q8_0 blk.1.ffn_up:q8_0"},
    // FFN 416 (not a multiple of 256): ffn_down falls back to a 32-block type.
    {"glm4-quant-ff416/model-iq4_xs.gguf", "iq4_xs", 416, 30, 23,
        "output:q6_K token_embd:iq4_xs blk.0.attn_k:iq4_xs blk.0.attn_output:iq4_xs blk.0.attn_q:iq4_xs "
        "blk.0.attn_v:q5_K blk.0.ffn_down:iq4_nl blk.0.ffn_up:iq4_xs blk.1.attn_k:iq4_xs "
        "blk.1.attn_output:iq4_xs blk.1.attn_q:iq4_xs blk.1.attn_v:q5_K blk.1.ffn_down:iq4_nl "
        "blk.1.ffn_up:iq4_xs"},
    {"glm4-quant-ff416/model-q4_k_m.gguf", "q4_k_m", 416, 15, 23,
        "output:q6_K token_embd:q4_K blk.0.attn_k:q4_K blk.0.attn_output:q4_K blk.0.attn_q:q4_K "
        "blk.0.attn_v:q4_K blk.0.ffn_down:q5_0 blk.0.ffn_up:q4_K blk.1.attn_k:q4_K blk.1.attn_output:q4_K "
        "blk.1.attn_q:q4_K blk.1.attn_v:q6_K blk.1.ffn_down:q8_0 blk.1.ffn_up:q4_K"},
    {"glm4-quant-ff416/model-q5_k_m.gguf", "q5_k_m", 416, 17, 23,
        "output:q6_K token_embd:q5_K blk.0.attn_k:q5_K blk.0.attn_output:q5_K blk.0.attn_q:q5_K "
        "blk.0.attn_v:q5_K blk.0.ffn_down:q5_1 blk.0.ffn_up:q5_K blk.1.attn_k:q5_K blk.1.attn_output:q5_K "
        "blk.1.attn_q:q5_K blk.1.attn_v:q6_K blk.1.ffn_down:q8_0 blk.1.ffn_up:q5_K"},
};

// name -> type name of every tensor of a file.
std::map<std::string, std::string> types_of(const GgufFile& f) {
    std::map<std::string, std::string> m;
    for (const auto& t : f.tensors()) m[t.name] = ggml_type_name(t.type);
    return m;
}

// Tensor by tensor, so that a failure names the tensor.
::testing::AssertionResult same_types(const std::map<std::string, std::string>& got,
                                      const std::map<std::string, std::string>& want) {
    std::ostringstream bad;
    for (const auto& [name, type] : want) {
        const auto it = got.find(name);
        if (it == got.end()) bad << " " << name << ": missing, want " << type << ";";
        else if (it->second != type) bad << " " << name << ": " << it->second << ", want " << type << ";";
    }
    for (const auto& [name, type] : got)
        if (!want.count(name)) bad << " " << name << " (" << type << "): not in the reference;";
    if (bad.str().empty()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << bad.str();
}

// The reference's table with the f32 norms added, as types_of gives it.
std::map<std::string, std::string> expected_types(const Reference& r, int n_layer) {
    std::map<std::string, std::string> m;
    std::istringstream ss(r.types);
    for (std::string tok; ss >> tok;) {
        const size_t colon = tok.find(':');
        m[tok.substr(0, colon) + ".weight"] = tok.substr(colon + 1);
    }
    m["output_norm.weight"] = "f32";
    for (int l = 0; l < n_layer; ++l)
        for (const char* n : {"attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"})
            m["blk." + std::to_string(l) + "." + n + ".weight"] = "f32";
    return m;
}

// The glm4-quant shape (shared/testdata/models/glm4-quant/README.md).
model::MkModelSpec glm4_quant_spec(int n_ff) {
    model::MkModelSpec s;
    s.n_layer = 2;
    s.n_embd = 256;
    s.n_head = 4;
    s.n_head_kv = 1;
    s.head_dim = 64;
    s.n_rot = 32;
    s.n_ff = n_ff;
    s.n_vocab = 666;
    s.n_ctx = 256;
    s.qkv_bias = false;
    return s;
}

TEST(MkModelFtype, SameTypesAsLlamaQuantize) {
    TempDir dir("pipelm-ftype-test");
    for (const Reference& r : kReferences) {
        SCOPED_TRACE(r.file);
        model::MkModelSpec s = glm4_quant_spec(r.n_ff);
        s.ftype = model::parse_ftype(r.ftype);
        const std::string path = dir.path(std::string(r.ftype) + "-" + std::to_string(r.n_ff) + ".gguf");
        model::mkmodel_write(s, path, 2);
        auto f = GgufFile::open(path);
        const auto want = expected_types(r, s.n_layer);
        ASSERT_EQ(want.size(), static_cast<size_t>(r.n_tensors));
        EXPECT_TRUE(same_types(types_of(*f), want));
        EXPECT_EQ(f->get("general.file_type").as_int(), static_cast<int64_t>(r.file_type));
        // The file loads as a GLM-4 of that shape (golden_test runs every type's forward).
        const model::Glm4Config c = model::Glm4Config::from_gguf(*f);
        EXPECT_EQ(c.n_ff, r.n_ff);
        // The table above is llama.cpp's file, when the copy is here.
        const std::string ref = std::string(PIPELM_TEST_DATA) + "/models/" + r.file;
        if (std::filesystem::exists(ref)) {
            auto rf = GgufFile::open(ref);
            EXPECT_TRUE(same_types(types_of(*rf), want)) << ref;
            EXPECT_EQ(rf->get("general.file_type").as_int(), static_cast<int64_t>(r.file_type)) << ref;
        }
    }
}

// use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2: for 61 layers (GLM-4-32B),
// 0-6, 53-60 and every third layer from 9.
TEST(MkModelFtype, MoreBitsLayersOf61) {
    model::MkModelSpec s = model::mkmodel_preset("glm4-32b");  // 61 layers, heads 48/2, FFN 23040
    ASSERT_EQ(s.n_layer, 61);
    std::set<int> more = {9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51};
    for (int i = 0; i < 7; ++i) more.insert(i);
    for (int i = 53; i < 61; ++i) more.insert(i);
    ASSERT_EQ(more.size(), 30u);
    const int64_t E = s.n_embd;
    for (int i = 0; i < s.n_layer; ++i) {
        SCOPED_TRACE("layer " + std::to_string(i));
        const bool m = more.count(i) > 0;
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ4_K_M, TensorId::kAttnV, E, i, s),
                  m ? GgmlType::kQ6_K : GgmlType::kQ4_K);
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ4_K_M, TensorId::kFfnDown, s.n_ff, i, s),
                  m ? GgmlType::kQ6_K : GgmlType::kQ4_K);
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ5_K_M, TensorId::kFfnDown, s.n_ff, i, s),
                  m ? GgmlType::kQ6_K : GgmlType::kQ5_K);
        for (TensorId n : {TensorId::kAttnQ, TensorId::kAttnK, TensorId::kAttnOutput, TensorId::kFfnUp})
            EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ4_K_M, n, E, i, s), GgmlType::kQ4_K) << model::tensor_name(n, i);
        // q4_k_s: attn_v of the first 4 layers and ffn_down of the first n/8 get q5_K.
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ4_K_S, TensorId::kAttnV, E, i, s),
                  i < 4 ? GgmlType::kQ5_K : GgmlType::kQ4_K);
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ4_K_S, TensorId::kFfnDown, s.n_ff, i, s),
                  i < 7 ? GgmlType::kQ5_K : GgmlType::kQ4_K);
        // iq4_xs without an imatrix: ffn_down of the first n/8 layers q5_K; GQA 24 -> attn_v q5_K.
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kIQ4_XS, TensorId::kFfnDown, s.n_ff, i, s),
                  i < 7 ? GgmlType::kQ5_K : GgmlType::kIQ4_XS);
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kIQ4_XS, TensorId::kAttnV, E, i, s), GgmlType::kQ5_K);
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ5_K_S, TensorId::kAttnV, E, i, s), GgmlType::kQ5_K);
        EXPECT_EQ(model::ftype_tensor_type(Ftype::kQ6_K, TensorId::kFfnDown, s.n_ff, i, s), GgmlType::kQ6_K);
    }
}

TEST(MkModelFtype, OutputEmbeddingAndFallbacks) {
    model::MkModelSpec s = model::mkmodel_preset("glm4-9b");  // 40 layers, heads 32/2, FFN 13696 = 53.5 x 256
    const int64_t E = s.n_embd, F = s.n_ff;
    using model::ftype_tensor_type;
    // output.weight: q6_K unless the base type is q8_0 or a float; token_embd: the base type.
    for (Ftype f : {Ftype::kQ4_0, Ftype::kQ4_1, Ftype::kQ5_0, Ftype::kQ5_1, Ftype::kIQ4_NL, Ftype::kIQ4_XS,
                    Ftype::kQ4_K_S, Ftype::kQ4_K_M, Ftype::kQ5_K_S, Ftype::kQ5_K_M, Ftype::kQ6_K}) {
        EXPECT_EQ(ftype_tensor_type(f, TensorId::kOutput, E, -1, s), GgmlType::kQ6_K) << model::ftype_name(f);
        EXPECT_EQ(ftype_tensor_type(f, TensorId::kTokenEmbd, E, -1, s), model::ftype_base_type(f));
    }
    for (Ftype f : {Ftype::kQ8_0, Ftype::kF16, Ftype::kBF16, Ftype::kF32}) {
        EXPECT_EQ(ftype_tensor_type(f, TensorId::kOutput, E, -1, s), model::ftype_base_type(f)) << model::ftype_name(f);
        EXPECT_EQ(ftype_tensor_type(f, TensorId::kFfnDown, F, 0, s), model::ftype_base_type(f));
        EXPECT_EQ(ftype_tensor_type(f, TensorId::kAttnV, E, 0, s), model::ftype_base_type(f));
    }
    // Rows of 13696: q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0, iq4_xs -> iq4_nl.
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ4_K_M, TensorId::kFfnDown, F, 6, s), GgmlType::kQ5_0);   // not more bits
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ4_K_M, TensorId::kFfnDown, F, 0, s), GgmlType::kQ8_0);   // q6_K
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ5_K_S, TensorId::kFfnDown, F, 9, s), GgmlType::kQ5_1);
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ6_K, TensorId::kFfnDown, F, 9, s), GgmlType::kQ8_0);
    EXPECT_EQ(ftype_tensor_type(Ftype::kIQ4_XS, TensorId::kFfnDown, F, 9, s), GgmlType::kIQ4_NL);
    EXPECT_EQ(ftype_tensor_type(Ftype::kIQ4_XS, TensorId::kFfnDown, F, 0, s), GgmlType::kQ5_1);  // q5_K
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ4_0, TensorId::kFfnDown, F, 9, s), GgmlType::kQ4_0);
    // output.weight with rows that are no multiple of 256 (or of the base type's block): q8_0.
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ4_K_M, TensorId::kOutput, 96, -1, s), GgmlType::kQ8_0);
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ4_0, TensorId::kOutput, 96, -1, s), GgmlType::kQ8_0);
    // A row no 32-block holds: a K type ends in f16 as in llama.cpp, a 32-block base type is an error.
    EXPECT_EQ(ftype_tensor_type(Ftype::kQ4_K_M, TensorId::kAttnQ, 100, 9, s), GgmlType::kF16);
    EXPECT_EQ(ftype_tensor_type(Ftype::kF16, TensorId::kAttnQ, 100, 9, s), GgmlType::kF16);
    try {
        ftype_tensor_type(Ftype::kQ4_0, TensorId::kAttnQ, 100, 9, s);
        ADD_FAILURE() << "q4_0 accepted rows of 100";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
        const std::string m = e.what();
        for (const char* w : {"--ftype", "q4_0", "blk.9.attn_q.weight", "100", "32"})
            EXPECT_NE(m.find(w), std::string::npos) << w << ": " << m;
    }
}

TEST(MkModelFtype, NamesAndLlamaCodes) {
    const std::pair<const char*, uint32_t> codes[] = {
        {"f32", 0}, {"f16", 1}, {"q4_0", 2}, {"q4_1", 3}, {"q8_0", 7}, {"q5_0", 8}, {"q5_1", 9}, {"q4_k_s", 14},
        {"q4_k_m", 15}, {"q5_k_s", 16}, {"q5_k_m", 17}, {"q6_k", 18}, {"iq4_nl", 25}, {"iq4_xs", 30}, {"bf16", 32}};
    for (const auto& [name, code] : codes) {
        const Ftype f = model::parse_ftype(name);
        EXPECT_STREQ(model::ftype_name(f), name);
        EXPECT_EQ(model::ftype_llama_code(f), code) << name;
        EXPECT_NE(model::ftype_names().find(name), std::string::npos) << name;
    }
    EXPECT_EQ(model::parse_ftype("Q4_K_M"), Ftype::kQ4_K_M);  // llama-quantize's spelling
    try {
        model::parse_ftype("q4_k");
        ADD_FAILURE() << "q4_k accepted as a file type";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
        const std::string m = e.what();
        for (const char* w : {"--ftype", "q4_k", "q4_k_m", "iq4_xs", "bf16"})
            EXPECT_NE(m.find(w), std::string::npos) << w << ": " << m;
    }
}

}  // namespace
}  // namespace pipelm
