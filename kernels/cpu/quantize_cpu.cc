// quantize_row: pipelm's own round-to-nearest quantizers for the block formats of spec §7.2.
//
// Simple and deterministic (no llama.cpp-style scale search). Scales are rounded to their
// stored precision (fp16 / 6-bit / int8) *before* the quants are chosen, so every quant is the
// nearest level of the scale that dequantize_row will actually use. Scalar code; used offline
// by `pipelm mkmodel` and by tests.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/quant_blocks.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/base/fp16.h"

namespace pipelm::kernels {
namespace {

using namespace blocks;

inline int clampi(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }
inline int round_int(float v) { return static_cast<int>(std::lround(v)); }
inline float fp16_round(float f) { return fp16_to_f32(f32_to_fp16(f)); }

// Signed value of largest magnitude in x[0..n).
float signed_absmax(const float* x, int n) {
    float amax = 0.f, m = 0.f;
    for (int i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            m = x[i];
        }
    }
    return m;
}

// Symmetric block: q in [0, 2*half), value = d * (q - half); d = max / -half (so the largest
// magnitude maps to the end of the range with the most levels). Returns the stored fp16 d.
float quant_symmetric(const float* x, int n, int half, uint8_t* q) {
    const float dq = fp16_round(signed_absmax(x, n) / -half);
    const float id = dq != 0.f ? 1.f / dq : 0.f;
    for (int i = 0; i < n; ++i) q[i] = (uint8_t)clampi(round_int(x[i] * id) + half, 0, 2 * half - 1);
    return dq;
}

// Asymmetric block: value = d*q + m with q in [0, levels]; stores fp16 d and m.
void quant_affine(const float* x, int n, int levels, uint8_t* q, float* d_out, float* m_out) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; ++i) {
        mn = std::min(mn, x[i]);
        mx = std::max(mx, x[i]);
    }
    const float dq = fp16_round((mx - mn) / levels);
    const float mq = fp16_round(mn);
    const float id = dq != 0.f ? 1.f / dq : 0.f;
    for (int i = 0; i < n; ++i) q[i] = (uint8_t)clampi(round_int((x[i] - mq) * id), 0, levels);
    *d_out = dq;
    *m_out = mq;
}

int nearest_iq4(float v) {
    int best = 0;
    float best_err = std::fabs(v - kIQ4NL[0]);
    for (int k = 1; k < 16; ++k) {
        const float e = std::fabs(v - kIQ4NL[k]);
        if (e < best_err) {
            best_err = e;
            best = k;
        }
    }
    return best;
}

// Codebook indices for x / d; returns the squared error.
float iq4_assign(const float* x, int n, float d, uint8_t* idx) {
    const float id = d != 0.f ? 1.f / d : 0.f;
    float err = 0.f;
    for (int i = 0; i < n; ++i) {
        idx[i] = (uint8_t)nearest_iq4(x[i] * id);
        const float e = x[i] - d * kIQ4NL[idx[i]];
        err += e * e;
    }
    return err;
}

// Scale for an IQ4 group: max/-127 (largest magnitude on the -127 entry), then one
// least-squares refit of d for the chosen indices if that lowers the error.
float iq4_scale(const float* x, int n) {
    uint8_t idx[32];
    float d = signed_absmax(x, n) / -127.f;
    const float err = iq4_assign(x, n, d, idx);
    double sxq = 0, sqq = 0;
    for (int i = 0; i < n; ++i) {
        sxq += (double)x[i] * kIQ4NL[idx[i]];
        sqq += (double)kIQ4NL[idx[i]] * kIQ4NL[idx[i]];
    }
    if (sqq > 0) {
        const float d2 = (float)(sxq / sqq);
        uint8_t idx2[32];
        if (iq4_assign(x, n, d2, idx2) < err) d = d2;
    }
    return d;
}

void pack_nibbles(const uint8_t* q, uint8_t* qs) {  // 32 quants -> 16 bytes, j | (j+16) << 4
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)((q[j] & 0x0F) | (q[j + 16] << 4));
}

void q4_0(const float* x, uint8_t* b) {
    uint8_t q[32];
    store_fp16(b, quant_symmetric(x, 32, 8, q));
    pack_nibbles(q, b + 2);
}

void q4_1(const float* x, uint8_t* b) {
    uint8_t q[32];
    float d, m;
    quant_affine(x, 32, 15, q, &d, &m);
    store_fp16(b, d);
    store_fp16(b + 2, m);
    pack_nibbles(q, b + 4);
}

void pack_q5(const uint8_t* q, uint8_t* qh_out, uint8_t* qs) {
    uint32_t qh = 0;
    for (int j = 0; j < 32; ++j) qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    std::memcpy(qh_out, &qh, 4);
    pack_nibbles(q, qs);
}

void q5_0(const float* x, uint8_t* b) {
    uint8_t q[32];
    store_fp16(b, quant_symmetric(x, 32, 16, q));
    pack_q5(q, b + 2, b + 6);
}

void q5_1(const float* x, uint8_t* b) {
    uint8_t q[32];
    float d, m;
    quant_affine(x, 32, 31, q, &d, &m);
    store_fp16(b, d);
    store_fp16(b + 2, m);
    pack_q5(q, b + 4, b + 8);
}

void q8_0(const float* x, uint8_t* b) {
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float dq = fp16_round(amax / 127.f);
    store_fp16(b, dq);
    for (int j = 0; j < 32; ++j)
        b[2 + j] = (uint8_t)(int8_t)(dq != 0.f ? clampi(round_int(x[j] / dq), -127, 127) : 0);
}

void iq4_nl(const float* x, uint8_t* b) {
    const float dq = fp16_round(iq4_scale(x, 32));
    uint8_t idx[32];
    iq4_assign(x, 32, dq, idx);
    store_fp16(b, dq);
    pack_nibbles(idx, b + 2);
}

// Q4_K / Q5_K: 8 sub-blocks of 32, value = d*sc*q - dmin*m, sc and m 6-bit, q in [0, levels].
void kquant_affine(const float* x, int levels, uint8_t* b, uint8_t* q) {
    float scale[8], minv[8];
    float max_scale = 0.f, max_min = 0.f;
    for (int s = 0; s < 8; ++s) {
        const float* xs = x + 32 * s;
        float mn = xs[0], mx = xs[0];
        for (int j = 1; j < 32; ++j) {
            mn = std::min(mn, xs[j]);
            mx = std::max(mx, xs[j]);
        }
        mn = std::min(mn, 0.f);  // the offset can only lower values (m >= 0)
        scale[s] = (mx - mn) / levels;
        minv[s] = -mn;
        max_scale = std::max(max_scale, scale[s]);
        max_min = std::max(max_min, minv[s]);
    }
    const float d = fp16_round(max_scale / 63.f);
    const float dmin = fp16_round(max_min / 63.f);
    uint8_t sc[8], m[8];
    for (int s = 0; s < 8; ++s) {
        sc[s] = (uint8_t)(d > 0.f ? clampi(round_int(scale[s] / d), 0, 63) : 0);
        m[s] = (uint8_t)(dmin > 0.f ? clampi(round_int(minv[s] / dmin), 0, 63) : 0);
    }
    store_fp16(b + 0, d);
    store_fp16(b + 2, dmin);
    uint8_t* p = b + 4;
    for (int j = 0; j < 4; ++j) {
        p[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        p[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
        p[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
    for (int s = 0; s < 8; ++s) {
        const float d1 = d * sc[s];
        const float m1 = dmin * m[s];
        const float id = d1 > 0.f ? 1.f / d1 : 0.f;
        for (int j = 0; j < 32; ++j) q[32 * s + j] = (uint8_t)clampi(round_int((x[32 * s + j] + m1) * id), 0, levels);
    }
}

void q4_k(const float* x, uint8_t* b) {
    uint8_t q[256];
    kquant_affine(x, 15, b, q);
    uint8_t* qs = b + q4k::kQs;
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

void q5_k(const float* x, uint8_t* b) {
    uint8_t q[256];
    kquant_affine(x, 31, b, q);
    uint8_t* qh = b + q5k::kQh;
    uint8_t* ql = b + q5k::kQs;
    std::memset(qh, 0, 32);
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
            ql[32 * c + l] = (uint8_t)((lo & 0x0F) | ((hi & 0x0F) << 4));
            qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
        }
    }
}

void q6_k(const float* x, uint8_t* b) {
    float scale[16];
    float amax = 0.f, max_scale = 0.f;
    for (int s = 0; s < 16; ++s) {
        scale[s] = signed_absmax(x + 16 * s, 16) / -32.f;
        if (std::fabs(scale[s]) > amax) {
            amax = std::fabs(scale[s]);
            max_scale = scale[s];
        }
    }
    const float d = fp16_round(max_scale / -128.f);  // the largest scale maps to sc = -128
    int8_t sc[16];
    for (int s = 0; s < 16; ++s) sc[s] = (int8_t)(d != 0.f ? clampi(round_int(scale[s] / d), -128, 127) : 0);
    uint8_t q[256];
    for (int s = 0; s < 16; ++s) {
        const float d1 = d * sc[s];
        const float id = d1 != 0.f ? 1.f / d1 : 0.f;
        for (int j = 0; j < 16; ++j) q[16 * s + j] = (uint8_t)clampi(round_int(x[16 * s + j] * id) + 32, 0, 63);
    }
    uint8_t* ql = b + q6k::kQl;
    uint8_t* qh = b + q6k::kQh;
    for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = q[128 * h + l], q2 = q[128 * h + l + 32];
            const uint8_t q3 = q[128 * h + l + 64], q4 = q[128 * h + l + 96];
            ql[64 * h + l] = (uint8_t)((q1 & 0x0F) | ((q3 & 0x0F) << 4));
            ql[64 * h + l + 32] = (uint8_t)((q2 & 0x0F) | ((q4 & 0x0F) << 4));
            qh[32 * h + l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
    }
    std::memcpy(b + q6k::kScales, sc, 16);
    store_fp16(b + q6k::kD, d);
}

void iq4_xs(const float* x, uint8_t* b) {
    float scale[8];
    float amax = 0.f, max_scale = 0.f;
    for (int s = 0; s < 8; ++s) {
        scale[s] = iq4_scale(x + 32 * s, 32);
        if (std::fabs(scale[s]) > amax) {
            amax = std::fabs(scale[s]);
            max_scale = scale[s];
        }
    }
    const float d = fp16_round(max_scale / -32.f);  // the largest scale maps to ls - 32 = -32
    uint16_t scales_h = 0;
    uint8_t* scales_l = b + iq4xs::kScalesL;
    std::memset(scales_l, 0, 4);
    for (int s = 0; s < 8; ++s) {
        const int ls = d != 0.f ? clampi(round_int(scale[s] / d), -32, 31) + 32 : 32;
        scales_l[s / 2] |= (uint8_t)((ls & 0x0F) << (4 * (s % 2)));
        scales_h |= (uint16_t)((ls >> 4) << (2 * s));
        const float dl = d * (ls - 32);
        uint8_t idx[32];
        iq4_assign(x + 32 * s, 32, dl, idx);
        pack_nibbles(idx, b + iq4xs::kQs + 16 * s);
    }
    store_fp16(b + iq4xs::kD, d);
    std::memcpy(b + iq4xs::kScalesH, &scales_h, 2);
}

}  // namespace

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
    check_row_length(type, n);
    uint8_t* out = static_cast<uint8_t*>(dst);
    switch (type) {
        case GgmlType::kF32:
            std::memcpy(dst, src, static_cast<size_t>(n) * 4);
            return;
        case GgmlType::kF16:
            for (int64_t i = 0; i < n; ++i) store_fp16(out + 2 * i, src[i]);
            return;
        case GgmlType::kBF16:
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = f32_to_bf16(src[i]);
                std::memcpy(out + 2 * i, &h, 2);
            }
            return;
        default: break;
    }
    void (*fn)(const float*, uint8_t*) = nullptr;
    switch (type) {
        case GgmlType::kQ4_0: fn = q4_0; break;
        case GgmlType::kQ4_1: fn = q4_1; break;
        case GgmlType::kQ5_0: fn = q5_0; break;
        case GgmlType::kQ5_1: fn = q5_1; break;
        case GgmlType::kQ8_0: fn = q8_0; break;
        case GgmlType::kIQ4_NL: fn = iq4_nl; break;
        case GgmlType::kQ4_K: fn = q4_k; break;
        case GgmlType::kQ5_K: fn = q5_k; break;
        case GgmlType::kQ6_K: fn = q6_k; break;
        case GgmlType::kIQ4_XS: fn = iq4_xs; break;
        default: PIPELM_THROW(ErrorCode::kUnsupported, "quantize_row: unsupported type ", ggml_type_name(type));
    }
    const auto& ti = ggml_type_info(type);
    for (int64_t i = 0; i < n / ti.block; ++i) fn(src + i * ti.block, out + i * ti.block_bytes);
}

}  // namespace pipelm::kernels
