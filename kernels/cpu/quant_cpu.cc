// dequantize_row: GGUF block formats -> float, bit-exact with ggml's dequantize_row_* (spec §7.2).
//
// Every formula below keeps ggml's order of float operations (e.g. Q4_K: d1 = d*sc, m1 = dmin*m,
// y = d1*q - m1, each a separately rounded float op). This file is compiled with
// -ffp-contract=off (kernels/CMakeLists.txt) so that no multiply-add is fused behind our back.
// Plain scalar code: it runs once per weight at load time (embedding rows, norms) and is the
// reference that the SIMD decoders of matmul_avx2.cc are tested against.
#include <cstring>

#include "kernels/cpu/quant_blocks.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/base/fp16.h"

namespace pipelm::kernels {
namespace {

using namespace blocks;

void deq_q4_0(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
        const int x0 = (qs[j] & 0x0F) - 8;
        const int x1 = (qs[j] >> 4) - 8;
        y[j] = x0 * d;
        y[j + 16] = x1 * d;
    }
}

void deq_q4_1(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    const float m = load_fp16(b + 2);
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) {
        const int x0 = qs[j] & 0x0F;
        const int x1 = qs[j] >> 4;
        y[j] = x0 * d + m;
        y[j + 16] = x1 * d + m;
    }
}

void deq_q5_0(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    const uint8_t* qs = b + 6;
    for (int j = 0; j < 16; ++j) {
        const uint8_t xh0 = ((qh >> j) << 4) & 0x10;
        const uint8_t xh1 = (qh >> (j + 12)) & 0x10;
        const int x0 = ((qs[j] & 0x0F) | xh0) - 16;
        const int x1 = ((qs[j] >> 4) | xh1) - 16;
        y[j] = x0 * d;
        y[j + 16] = x1 * d;
    }
}

void deq_q5_1(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    const float m = load_fp16(b + 2);
    uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    const uint8_t* qs = b + 8;
    for (int j = 0; j < 16; ++j) {
        const uint8_t xh0 = ((qh >> j) << 4) & 0x10;
        const uint8_t xh1 = (qh >> (j + 12)) & 0x10;
        const int x0 = (qs[j] & 0x0F) | xh0;
        const int x1 = (qs[j] >> 4) | xh1;
        y[j] = x0 * d + m;
        y[j + 16] = x1 * d + m;
    }
}

void deq_q8_0(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
    for (int j = 0; j < 32; ++j) y[j] = qs[j] * d;
}

void deq_iq4_nl(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
        y[j] = d * kIQ4NL[qs[j] & 0x0F];
        y[j + 16] = d * kIQ4NL[qs[j] >> 4];
    }
}

void deq_q4_k(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    const float dmin = load_fp16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    for (int c = 0; c < 4; ++c) {
        uint8_t sc, m;
        scale_min_k4(2 * c, scales, &sc, &m);
        const float d1 = d * sc;
        const float m1 = dmin * m;
        scale_min_k4(2 * c + 1, scales, &sc, &m);
        const float d2 = d * sc;
        const float m2 = dmin * m;
        for (int l = 0; l < 32; ++l) y[l] = d1 * (q[l] & 0x0F) - m1;
        for (int l = 0; l < 32; ++l) y[32 + l] = d2 * (q[l] >> 4) - m2;
        q += 32;
        y += 64;
    }
}

void deq_q5_k(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    const float dmin = load_fp16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int c = 0; c < 4; ++c) {
        uint8_t sc, m;
        scale_min_k4(2 * c, scales, &sc, &m);
        const float d1 = d * sc;
        const float m1 = dmin * m;
        scale_min_k4(2 * c + 1, scales, &sc, &m);
        const float d2 = d * sc;
        const float m2 = dmin * m;
        for (int l = 0; l < 32; ++l) y[l] = d1 * ((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; ++l) y[32 + l] = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        ql += 32;
        y += 64;
        u1 <<= 2;
        u2 <<= 2;
    }
}

void deq_q6_k(const uint8_t* b, float* y) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = load_fp16(b + 208);
    for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int8_t q1 = (int8_t)((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int8_t q2 = (int8_t)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

void deq_iq4_xs(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    uint16_t scales_h;
    std::memcpy(&scales_h, b + 2, 2);
    const uint8_t* scales_l = b + 4;
    const uint8_t* qs = b + 8;
    for (int ib = 0; ib < 8; ++ib) {
        const int ls = ((scales_l[ib / 2] >> 4 * (ib % 2)) & 0x0F) | (((scales_h >> 2 * ib) & 3) << 4);
        const float dl = d * (ls - 32);
        for (int j = 0; j < 16; ++j) {
            y[j] = dl * kIQ4NL[qs[j] & 0x0F];
            y[j + 16] = dl * kIQ4NL[qs[j] >> 4];
        }
        y += 32;
        qs += 16;
    }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GgmlType type) {
    switch (type) {
        case GgmlType::kQ4_0: return deq_q4_0;
        case GgmlType::kQ4_1: return deq_q4_1;
        case GgmlType::kQ5_0: return deq_q5_0;
        case GgmlType::kQ5_1: return deq_q5_1;
        case GgmlType::kQ8_0: return deq_q8_0;
        case GgmlType::kIQ4_NL: return deq_iq4_nl;
        case GgmlType::kQ4_K: return deq_q4_k;
        case GgmlType::kQ5_K: return deq_q5_k;
        case GgmlType::kQ6_K: return deq_q6_k;
        case GgmlType::kIQ4_XS: return deq_iq4_xs;
        default: return nullptr;
    }
}

}  // namespace

bool quant_type_supported(GgmlType type) {
    return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16 ||
           block_fn(type) != nullptr;
}

void check_row_length(GgmlType type, int64_t n) {
    if (!quant_type_supported(type))
        PIPELM_THROW(ErrorCode::kUnsupported, "weight type ", ggml_type_name(type),
                     " is not supported by the CPU kernels (supported: ", supported_ggml_types(), ")");
    const int64_t qk = ggml_type_info(type).block;
    PIPELM_CHECK(n >= 0 && n % qk == 0, "row length ", n, " is not a multiple of the ", ggml_type_name(type),
                 " block size ", qk);
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
    check_row_length(type, n);
    const uint8_t* s = static_cast<const uint8_t*>(src);
    switch (type) {
        case GgmlType::kF32:
            std::memcpy(dst, src, static_cast<size_t>(n) * 4);
            return;
        case GgmlType::kF16:
            for (int64_t i = 0; i < n; ++i) dst[i] = load_fp16(s + 2 * i);
            return;
        case GgmlType::kBF16:
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, s + 2 * i, 2);
                dst[i] = bf16_to_f32(h);
            }
            return;
        default: break;
    }
    const BlockFn fn = block_fn(type);
    const auto& ti = ggml_type_info(type);
    const int64_t nb = n / ti.block;
    for (int64_t i = 0; i < nb; ++i) fn(s + i * ti.block_bytes, dst + i * ti.block);
}

}  // namespace pipelm::kernels
