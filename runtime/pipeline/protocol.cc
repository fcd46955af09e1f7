#include "runtime/pipeline/protocol.h"

#include <cstring>

#include "runtime/base/fp16.h"

namespace pipelm::pipeline {

const char* wire_name(Wire w) { return w == Wire::kBF16 ? "bf16" : "f32"; }

Wire parse_wire(const std::string& s) {
    if (s == "f32") return Wire::kF32;
    if (s == "bf16") return Wire::kBF16;
    PIPELM_THROW(ErrorCode::kInvalidArgument, "--wire ", s, ": use f32 (exact) or bf16 (half the bytes)");
}

std::vector<uint8_t> pack_hidden(const float* x, int64_t n, Wire w) {
    std::vector<uint8_t> out;
    if (w == Wire::kF32) {
        out.resize(n * 4);
        std::memcpy(out.data(), x, n * 4);
    } else {
        out.resize(n * 2);
        auto* p = reinterpret_cast<uint16_t*>(out.data());
        for (int64_t i = 0; i < n; ++i) p[i] = f32_to_bf16(x[i]);
    }
    return out;
}

void unpack_hidden(const std::vector<uint8_t>& bytes, float* x, int64_t n, Wire w) {
    const size_t need = static_cast<size_t>(n) * (w == Wire::kF32 ? 4 : 2);
    if (bytes.size() != need)
        PIPELM_THROW(ErrorCode::kProtocol, "ubatch payload has ", bytes.size(), " bytes, expected ", need);
    if (w == Wire::kF32) {
        std::memcpy(x, bytes.data(), need);
    } else {
        const auto* p = reinterpret_cast<const uint16_t*>(bytes.data());
        for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_f32(p[i]);
    }
}

}  // namespace pipelm::pipeline
