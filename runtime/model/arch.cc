#include "runtime/model/arch.h"

#include "runtime/base/error.h"

namespace pipelm::model {
namespace {

std::vector<ArchTraits> make_registry() {
    std::vector<ArchTraits> r;
    ArchTraits glm4;
    glm4.name = "glm4";
    glm4.description = "GLM-4-0414 (GLM-4-9B/32B, GLM-Z1): sandwich RMSNorms, GQA, partial NORM RoPE, fused SwiGLU";
    glm4.rope = RopeType::kNorm;
    glm4.sandwich_norms = true;
    glm4.fused_gate_up = true;
    // GLM-4's activations exceed the FP16 range: K·Q scores, softmax·V, attn_output and ffn_down
    // must accumulate in FP32 (docs/glm4-spec.md §6; llama.cpp PRs #9130, #13101, #13607).
    glm4.precision = {Precision::kF32, Precision::kF32, Precision::kF32, Precision::kF32};
    r.push_back(glm4);
    return r;
}

const std::vector<ArchTraits>& registry() {
    static const std::vector<ArchTraits> r = make_registry();
    return r;
}

}  // namespace

const char* precision_name(Precision p) {
    switch (p) {
        case Precision::kF16: return "f16";
        case Precision::kBF16: return "bf16";
        case Precision::kF32: return "f32";
    }
    return "?";
}

Precision parse_precision(const std::string& s) {
    if (s == "f16") return Precision::kF16;
    if (s == "bf16") return Precision::kBF16;
    if (s == "f32") return Precision::kF32;
    PIPELM_THROW(ErrorCode::kInvalidArgument, "unknown precision '", s, "' (use f32, bf16 or f16)");
}

const ArchTraits& find_arch(const std::string& name, const std::string& file) {
    for (const auto& a : registry())
        if (a.name == name) return a;
    std::string known;
    for (const auto& a : registry()) known += (known.empty() ? "" : ", ") + a.name;
    PIPELM_THROW(ErrorCode::kUnsupported, file, ": unknown architecture '", name, "' (pipelm knows: ", known,
                 "); use a GGUF converted from one of these");
}

std::vector<std::string> known_archs() {
    std::vector<std::string> v;
    for (const auto& a : registry()) v.push_back(a.name);
    return v;
}

}  // namespace pipelm::model
