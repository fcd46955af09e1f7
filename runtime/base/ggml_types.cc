#include "runtime/base/ggml_types.h"

#include <algorithm>
#include <cctype>

#include "runtime/base/error.h"

namespace pipelm {
namespace {

struct Entry {
    uint32_t id;
    GgmlTypeInfo info;
};

// Block layouts from ggml-common.h (see docs/glm4-spec.md §7.2).
const Entry kTable[] = {
    {0, {"f32", 1, 4, true, true}},
    {1, {"f16", 1, 2, true, true}},
    {2, {"q4_0", 32, 18, true, true}},
    {3, {"q4_1", 32, 20, true, true}},
    {6, {"q5_0", 32, 22, true, true}},
    {7, {"q5_1", 32, 24, true, true}},
    {8, {"q8_0", 32, 34, true, true}},
    {9, {"q8_1", 32, 36, true, false}},
    {10, {"q2_K", 256, 84, true, false}},
    {11, {"q3_K", 256, 110, true, false}},
    {12, {"q4_K", 256, 144, true, true}},
    {13, {"q5_K", 256, 176, true, true}},
    {14, {"q6_K", 256, 210, true, true}},
    {15, {"q8_K", 256, 292, true, false}},
    {16, {"iq2_xxs", 256, 66, true, false}},
    {17, {"iq2_xs", 256, 74, true, false}},
    {18, {"iq3_xxs", 256, 98, true, false}},
    {19, {"iq1_s", 256, 50, true, false}},
    {20, {"iq4_nl", 32, 18, true, true}},
    {21, {"iq3_s", 256, 110, true, false}},
    {22, {"iq2_s", 256, 82, true, false}},
    {23, {"iq4_xs", 256, 136, true, true}},
    {24, {"i8", 1, 1, true, false}},
    {25, {"i16", 1, 2, true, false}},
    {26, {"i32", 1, 4, true, false}},
    {27, {"i64", 1, 8, true, false}},
    {28, {"f64", 1, 8, true, false}},
    {29, {"iq1_m", 256, 56, true, false}},
    {30, {"bf16", 1, 2, true, true}},
    {34, {"tq1_0", 256, 54, true, false}},
    {35, {"tq2_0", 256, 66, true, false}},
    {39, {"mxfp4", 32, 17, true, false}},
};

const GgmlTypeInfo kUnknown{"unknown", 1, 0, false, false};

}  // namespace

const GgmlTypeInfo& ggml_type_info(uint32_t id) {
    for (const auto& e : kTable)
        if (e.id == id) return e.info;
    return kUnknown;
}

GgmlType parse_ggml_type(const std::string& name) {
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const auto& e : kTable) {
        std::string n = e.info.name;
        std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
        if (n == lower && e.info.supported) return static_cast<GgmlType>(e.id);
    }
    PIPELM_THROW(ErrorCode::kInvalidArgument, "unknown or unsupported type '", name, "' (supported: ",
                 supported_ggml_types(), ")");
}

std::string supported_ggml_types() {
    std::string s;
    for (const auto& e : kTable) {
        if (!e.info.supported) continue;
        if (!s.empty()) s += ", ";
        s += e.info.name;
    }
    return s;
}

}  // namespace pipelm
