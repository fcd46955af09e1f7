// ggml tensor element types as stored in GGUF files: ids, block sizes, bytes per block.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace pipelm {

enum class GgmlType : uint32_t {
    kF32 = 0,
    kF16 = 1,
    kQ4_0 = 2,
    kQ4_1 = 3,
    kQ5_0 = 6,
    kQ5_1 = 7,
    kQ8_0 = 8,
    kQ8_1 = 9,
    kQ2_K = 10,
    kQ3_K = 11,
    kQ4_K = 12,
    kQ5_K = 13,
    kQ6_K = 14,
    kQ8_K = 15,
    kIQ2_XXS = 16,
    kIQ2_XS = 17,
    kIQ3_XXS = 18,
    kIQ1_S = 19,
    kIQ4_NL = 20,
    kIQ3_S = 21,
    kIQ2_S = 22,
    kIQ4_XS = 23,
    kI8 = 24,
    kI16 = 25,
    kI32 = 26,
    kI64 = 27,
    kF64 = 28,
    kIQ1_M = 29,
    kBF16 = 30,
    kTQ1_0 = 34,
    kTQ2_0 = 35,
    kMXFP4 = 39,
};

struct GgmlTypeInfo {
    const char* name;   // "q4_K" as ggml names it
    int64_t block;      // elements per block
    size_t block_bytes;  // bytes per block
    bool known;         // a type ggml defines (file may hold it)
    bool supported;     // pipelm can compute with it
};

// Info for a raw id; unknown ids give known=false.
const GgmlTypeInfo& ggml_type_info(uint32_t id);
inline const GgmlTypeInfo& ggml_type_info(GgmlType t) { return ggml_type_info(static_cast<uint32_t>(t)); }
inline const char* ggml_type_name(GgmlType t) { return ggml_type_info(t).name; }
// Bytes of a row of n elements (n must be a multiple of the block size).
inline size_t ggml_row_bytes(GgmlType t, int64_t n) {
    const auto& ti = ggml_type_info(t);
    return static_cast<size_t>(n / ti.block) * ti.block_bytes;
}
// Parses "f16", "q8_0", "q4_k", "iq4_xs" ... (case-insensitive); throws on unknown names.
GgmlType parse_ggml_type(const std::string& name);
// Comma-separated list of the types pipelm computes with (for error messages).
std::string supported_ggml_types();

}  // namespace pipelm
