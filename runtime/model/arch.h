// Architecture registry: an architecture is a table entry (name, GGUF key prefix, tensor names,
// rope type, precision policy), not a fork of the code. Kernels read the precision policy;
// nothing outside this table says "if GLM-4".
#pragma once
#include <string>
#include <vector>

namespace pipelm::model {

enum class Precision { kF16, kBF16, kF32 };
const char* precision_name(Precision p);
Precision parse_precision(const std::string& s);  // "f16" | "bf16" | "f32"

// Minimum accumulation precision per op class (used by the CUDA backend; the CPU backend always
// accumulates in FP32, which satisfies every policy).
struct PrecisionPolicy {
    Precision kq = Precision::kF32;           // K·Q scores
    Precision softmax_v = Precision::kF32;    // softmax · V
    Precision attn_output = Precision::kF32;  // attention output projection
    Precision ffn_down = Precision::kF32;     // FFN down projection
};

enum class RopeType { kNorm, kNeox };

struct ArchTraits {
    std::string name;           // general.architecture
    std::string description;
    RopeType rope = RopeType::kNorm;
    bool sandwich_norms = true;   // post-attention and post-FFN RMSNorms
    bool fused_gate_up = true;    // ffn_up holds [gate; up]
    PrecisionPolicy precision;
};

// Throws Error{kUnsupported} "unknown architecture 'x' in FILE (known: glm4)".
const ArchTraits& find_arch(const std::string& name, const std::string& file);
std::vector<std::string> known_archs();

}  // namespace pipelm::model
