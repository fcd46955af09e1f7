// CPU implementations of kernels/ops.h: clear loops. Attention and SwiGLU (vectorized, with an
// AVX2 variant chosen at run time) are in attention_cpu.cc.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/error.h"
#include "runtime/base/fp16.h"

namespace pipelm::kernels {

void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t n_rows, int64_t n,
              float eps, ThreadPool& pool) {
    pool.parallel_for(n_rows, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            const float* xr = x + r * ldx;
            float* yr = y + r * ldy;
            // Eight double lanes (lane l: the elements i = l mod 8, in i order), then a fixed tree:
            // eight short dependency chains instead of one n long (a 1024-wide decode row took
            // ~1.8 us on Zen 5 with one chain, while the other threads waited). The order
            // depends only on n, so every row, split and thread count gives the same bits.
            double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            const int64_t n8 = n & ~int64_t{7};
            for (int64_t i = 0; i < n8; i += 8)
                for (int j = 0; j < 8; ++j) l[j] += (double)xr[i + j] * (double)xr[i + j];
            double sum = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
            for (int64_t i = n8; i < n; ++i) sum += (double)xr[i] * (double)xr[i];
            const float mean = static_cast<float>(sum / static_cast<double>(n));
            const float scale = 1.0f / std::sqrt(mean + eps);
            for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * scale) * w[i];
        }
    });
}

void rope_table(float* cs, int64_t n_pos, int n_rot, float base) {
    for (int64_t p = 0; p < n_pos; ++p)
        for (int i = 0; i < n_rot / 2; ++i) {
            const double theta = static_cast<double>(p) * std::pow(static_cast<double>(base), -2.0 * i / n_rot);
            cs[p * n_rot + 2 * i] = static_cast<float>(std::cos(theta));
            cs[p * n_rot + 2 * i + 1] = static_cast<float>(std::sin(theta));
        }
}

void rope_norm(float* x, int64_t ld, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
               const float* cos_sin) {
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float* cs = cos_sin + static_cast<int64_t>(pos[t]) * n_rot;
        for (int h = 0; h < n_heads; ++h) {
            float* v = x + t * ld + static_cast<int64_t>(h) * head_dim;
            for (int i = 0; i < n_rot; i += 2) {
                const float c = cs[i], s = cs[i + 1];
                const float x0 = v[i], x1 = v[i + 1];
                v[i] = x0 * c - x1 * s;
                v[i + 1] = x0 * s + x1 * c;
            }
        }
    }
}

void add_inplace(float* x, const float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void store_row(GgmlType type, const float* src, void* dst, int64_t n) {
    switch (type) {
        case GgmlType::kF32: std::memcpy(dst, src, n * sizeof(float)); return;
        case GgmlType::kF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = f32_to_fp16(src[i]);
            return;
        }
        default: quantize_row(type, src, dst, n); return;
    }
}

bool has_non_finite(const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(x[i])) return true;
    return false;
}

}  // namespace pipelm::kernels
