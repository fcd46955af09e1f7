// CPU implementations of kernels/ops.h. Clear loops; the hot paths (attention dot products)
// have an AVX2 variant chosen at run time.
#include <immintrin.h>

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
            double sum = 0.0;
            for (int64_t i = 0; i < n; ++i) sum += (double)xr[i] * (double)xr[i];
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

void swiglu(const float* gu, float* out, int64_t n_tokens, int64_t n_ff, ThreadPool& pool) {
    pool.parallel_for(n_tokens * n_ff, [&](int64_t b, int64_t e, int) {
        for (int64_t k = b; k < e; ++k) {
            const int64_t t = k / n_ff, i = k % n_ff;
            const float g = gu[t * 2 * n_ff + i];
            const float u = gu[t * 2 * n_ff + n_ff + i];
            out[k] = g / (1.0f + std::exp(-g)) * u;
        }
    }, 256);
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

namespace {

// Dot product of q (f32) with a row of K in f32, 8 lanes then a fixed reduction.
__attribute__((target("avx2,fma"))) float dot_f32_avx2(const float* a, const float* b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    alignas(32) float l[8];
    _mm256_store_ps(l, acc);
    float s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}
__attribute__((target("avx2,fma"))) void axpy_f32_avx2(float* y, const float* x, float a, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}
float dot_f32_scalar(const float* a, const float* b, int n) {
    float l[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) l[j] = std::fma(a[i + j], b[i + j], l[j]);
    float s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}
void axpy_f32_scalar(float* y, const float* x, float a, int n) {
    for (int i = 0; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

inline float dot_f32(const float* a, const float* b, int n) {
    return kHaveAvx2 ? dot_f32_avx2(a, b, n) : dot_f32_scalar(a, b, n);
}
inline void axpy_f32(float* y, const float* x, float a, int n) {
    if (kHaveAvx2) axpy_f32_avx2(y, x, a, n);
    else axpy_f32_scalar(y, x, a, n);
}

}  // namespace

void attention(const AttentionArgs& a, ThreadPool& pool) {
    const int group = a.n_head / a.n_head_kv;
    const int hd = a.head_dim;
    const int64_t kv_width = static_cast<int64_t>(a.n_head_kv) * hd;
    const size_t row_bytes = ggml_row_bytes(a.kv_type, kv_width);
    pool.parallel_for(a.n_tokens * a.n_head, [&](int64_t b, int64_t e, int) {
        std::vector<float> scores, krow(hd), vrow(hd), acc(hd);
        for (int64_t k = b; k < e; ++k) {
            const int64_t t = k / a.n_head;
            const int h = static_cast<int>(k % a.n_head);
            const int g = h / group;
            const int n = a.n_kv[t];
            const float* q = a.q + t * a.ldq + static_cast<int64_t>(h) * hd;
            const auto* kbase = static_cast<const uint8_t*>(a.k_rows[t]);
            const auto* vbase = static_cast<const uint8_t*>(a.v_rows[t]);
            scores.resize(n);
            float mx = -INFINITY;
            for (int j = 0; j < n; ++j) {
                const uint8_t* kr = kbase + j * row_bytes;
                const float* kv;
                if (a.kv_type == GgmlType::kF32) {
                    kv = reinterpret_cast<const float*>(kr) + static_cast<int64_t>(g) * hd;
                } else {
                    // hd is a multiple of 32, so a head's slice starts on a block boundary.
                    dequantize_row(a.kv_type, kr + ggml_row_bytes(a.kv_type, static_cast<int64_t>(g) * hd), krow.data(), hd);
                    kv = krow.data();
                }
                const float s = dot_f32(q, kv, hd) * a.scale;
                scores[j] = s;
                mx = std::max(mx, s);
            }
            double sum = 0.0;
            for (int j = 0; j < n; ++j) {
                const float p = std::exp(scores[j] - mx);
                scores[j] = p;
                sum += p;
            }
            const float inv = static_cast<float>(1.0 / sum);
            std::fill(acc.begin(), acc.end(), 0.f);
            for (int j = 0; j < n; ++j) {
                const uint8_t* vr = vbase + j * row_bytes;
                const float* vv;
                if (a.kv_type == GgmlType::kF32) {
                    vv = reinterpret_cast<const float*>(vr) + static_cast<int64_t>(g) * hd;
                } else {
                    dequantize_row(a.kv_type, vr + ggml_row_bytes(a.kv_type, static_cast<int64_t>(g) * hd), vrow.data(), hd);
                    vv = vrow.data();
                }
                axpy_f32(acc.data(), vv, scores[j] * inv, hd);
            }
            float* o = a.out + t * a.ldo + static_cast<int64_t>(h) * hd;
            std::memcpy(o, acc.data(), hd * sizeof(float));
        }
    });
}

}  // namespace pipelm::kernels
