// Shared helpers for the GGUF block formats of spec §7.2 (internal to kernels/cpu).
#pragma once
#include <cstdint>
#include <cstring>

#include "runtime/base/fp16.h"

namespace pipelm::kernels::blocks {

// IQ4_NL / IQ4_XS codebook (ggml kvalues_iq4nl).
inline constexpr int8_t kIQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                      1,    13,   25,  38,  53,  69,  89,  113};

inline float load_fp16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return fp16_to_f32(h);
}
inline void store_fp16(uint8_t* p, float f) {
    const uint16_t h = f32_to_fp16(f);
    std::memcpy(p, &h, 2);
}

// Q4_K/Q5_K 6-bit scale and min of sub-block j (0..7) from the 12 packed scale bytes.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Byte offsets inside the blocks.
namespace q4k {
inline constexpr int kD = 0, kDmin = 2, kScales = 4, kQs = 16, kBytes = 144;
}
namespace q5k {
inline constexpr int kD = 0, kDmin = 2, kScales = 4, kQh = 16, kQs = 48, kBytes = 176;
}
namespace q6k {
inline constexpr int kQl = 0, kQh = 128, kScales = 192, kD = 208, kBytes = 210;
}
namespace iq4xs {
inline constexpr int kD = 0, kScalesH = 2, kScalesL = 4, kQs = 8, kBytes = 136;
}

}  // namespace pipelm::kernels::blocks
