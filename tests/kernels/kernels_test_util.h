// Test helpers for tests/kernels: an independent element-by-element reference dequantizer
// written from docs/glm4-spec.md §7.2 (not sharing code with kernels/), random block
// generators, bit comparison, and the weight / activation makers of the matmul tests.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "runtime/base/ggml_types.h"
#include "runtime/base/thread_pool.h"

namespace pipelm::kernels::testing {

inline uint32_t f2u(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float u2f(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// IEEE binary16 -> float by the textbook formula (in double, exact), independent of fp16.h.
inline float ref_half(uint16_t h) {
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = std::ldexp(static_cast<double>(m), -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = std::ldexp(static_cast<double>(m + 1024), e - 25);
    return static_cast<float>(s ? -v : v);
}
inline float rd_half(const uint8_t* p) { return ref_half(static_cast<uint16_t>(p[0] | p[1] << 8)); }

inline const int kRefIQ4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// 6-bit scale / min of sub-block j (spec §7.2, get_scale_min_k4).
inline void ref_k4_scale(const uint8_t* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Element e (0 <= e < block size) of one block, with ggml's float operation order.
inline float ref_element(GgmlType type, const uint8_t* b, int e) {
    switch (type) {
        case GgmlType::kF32: {
            float f;
            std::memcpy(&f, b + 4 * e, 4);
            return f;
        }
        case GgmlType::kF16: return rd_half(b + 2 * e);
        case GgmlType::kBF16: return u2f(static_cast<uint32_t>(b[2 * e] | b[2 * e + 1] << 8) << 16);
        case GgmlType::kQ4_0: {
            const int q = e < 16 ? (b[2 + e] & 0xF) : (b[2 + e - 16] >> 4);
            return static_cast<float>(q - 8) * rd_half(b);
        }
        case GgmlType::kQ4_1: {
            const int q = e < 16 ? (b[4 + e] & 0xF) : (b[4 + e - 16] >> 4);
            return static_cast<float>(q) * rd_half(b) + rd_half(b + 2);
        }
        case GgmlType::kQ5_0:
        case GgmlType::kQ5_1: {
            const bool one = type == GgmlType::kQ5_1;
            const uint8_t* qh = b + (one ? 4 : 2);
            const uint8_t* qs = b + (one ? 8 : 6);
            int q = e < 16 ? (qs[e] & 0xF) : (qs[e - 16] >> 4);
            q |= ((qh[e / 8] >> (e % 8)) & 1) << 4;
            if (!one) return static_cast<float>(q - 16) * rd_half(b);
            return static_cast<float>(q) * rd_half(b) + rd_half(b + 2);
        }
        case GgmlType::kQ8_0: return static_cast<float>(static_cast<int8_t>(b[2 + e])) * rd_half(b);
        case GgmlType::kIQ4_NL: {
            const int q = e < 16 ? (b[2 + e] & 0xF) : (b[2 + e - 16] >> 4);
            return rd_half(b) * static_cast<float>(kRefIQ4[q]);
        }
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K: {
            const bool five = type == GgmlType::kQ5_K;
            const int s = e / 32, l = e % 32, c = s / 2;
            const uint8_t* qs = b + (five ? 48 : 16);
            int q = (s % 2 == 0) ? (qs[32 * c + l] & 0xF) : (qs[32 * c + l] >> 4);
            if (five && ((b[16 + l] >> s) & 1)) q += 16;
            int sc, m;
            ref_k4_scale(b + 4, s, &sc, &m);
            const float d1 = rd_half(b) * static_cast<float>(sc);
            const float m1 = rd_half(b + 2) * static_cast<float>(m);
            return d1 * static_cast<float>(q) - m1;
        }
        case GgmlType::kQ6_K: {
            const int h = e / 128, g = (e % 128) / 32, l = e % 32;
            const uint8_t ql = b[64 * h + l + 32 * (g & 1)];
            const int lo = g < 2 ? (ql & 0xF) : (ql >> 4);
            const int hi = (b[128 + 32 * h + l] >> (2 * g)) & 3;
            const int q = (lo | hi << 4) - 32;
            const int sc = static_cast<int8_t>(b[192 + 8 * h + l / 16 + 2 * g]);
            return rd_half(b + 208) * static_cast<float>(sc) * static_cast<float>(q);
        }
        case GgmlType::kIQ4_XS: {
            const int ib = e / 32, j = e % 32;
            const int scales_h = b[2] | b[3] << 8;
            const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4);
            const float dl = rd_half(b) * static_cast<float>(ls - 32);
            const uint8_t* qs = b + 8 + 16 * ib;
            const int q = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
            return dl * static_cast<float>(kRefIQ4[q]);
        }
        default: return NAN;
    }
}

inline std::vector<float> ref_dequantize(GgmlType type, const void* src, int64_t n) {
    const auto& ti = ggml_type_info(type);
    std::vector<float> out(static_cast<size_t>(n));
    const uint8_t* p = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n; ++i)
        out[i] = ref_element(type, p + (i / ti.block) * ti.block_bytes, static_cast<int>(i % ti.block));
    return out;
}

// The 13 types of quant.h.
inline const std::vector<GgmlType>& all_types() {
    static const std::vector<GgmlType> v = {GgmlType::kF32,   GgmlType::kF16,   GgmlType::kBF16,  GgmlType::kQ4_0,
                                            GgmlType::kQ4_1,  GgmlType::kQ5_0,  GgmlType::kQ5_1,  GgmlType::kQ8_0,
                                            GgmlType::kIQ4_NL, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K,
                                            GgmlType::kIQ4_XS};
    return v;
}

// Byte offsets of the fp16 fields of a block (d, m, dmin).
inline std::vector<int> half_fields(GgmlType type) {
    switch (type) {
        case GgmlType::kQ4_1:
        case GgmlType::kQ5_1:
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K: return {0, 2};
        case GgmlType::kQ6_K: return {208};
        case GgmlType::kF32:
        case GgmlType::kF16:
        case GgmlType::kBF16: return {};
        default: return {0};
    }
}

// Random finite fp16 bits (any sign, exponent 0..30), optionally limited to |v| < 2^(emax-15).
inline uint16_t random_finite_half(std::mt19937_64& rng, int emax = 30) {
    const uint16_t e = static_cast<uint16_t>(rng() % (emax + 1));
    return static_cast<uint16_t>((rng() & 0x8000) | e << 10 | (rng() & 0x3ff));
}

// A row of n values of `type` made of random bytes, with finite fp16 scales (and finite f16 /
// bf16 / f32 elements). emax bounds the fp16 exponents (30: any finite value).
inline std::vector<uint8_t> random_row(GgmlType type, int64_t n, std::mt19937_64& rng, int emax = 30) {
    const auto& ti = ggml_type_info(type);
    std::vector<uint8_t> row(ggml_row_bytes(type, n));
    for (auto& c : row) c = static_cast<uint8_t>(rng());
    const int64_t nb = n / ti.block;
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t* b = row.data() + i * ti.block_bytes;
        if (type == GgmlType::kF32) {
            const float f = std::ldexp(static_cast<float>(static_cast<int>(rng() % 2000001) - 1000000) / 1e6f,
                                       static_cast<int>(rng() % 40) - 20);
            std::memcpy(b, &f, 4);
        } else if (type == GgmlType::kF16) {
            const uint16_t h = random_finite_half(rng, emax);
            std::memcpy(b, &h, 2);
        } else if (type == GgmlType::kBF16) {
            const uint16_t h = static_cast<uint16_t>((rng() & 0x8000) | (100 + rng() % 56) << 7 | (rng() & 0x7f));
            std::memcpy(b, &h, 2);
        }
        for (int off : half_fields(type)) {
            const uint16_t h = random_finite_half(rng, emax);
            std::memcpy(b + off, &h, 2);
        }
    }
    return row;
}

// Index of the first bit difference, or -1.
inline int64_t first_bit_diff(const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (f2u(a[i]) != f2u(b[i])) return i;
    return -1;
}

// A matmul weight together with the bytes its Matrix points into.
struct Weight {
    GgmlType type;
    int64_t rows, cols;
    std::vector<uint8_t> data;
    Matrix m;
};

// rows x cols weight of `type`: quantized N(0, 1/sqrt(cols)) values (realistic), or random
// block bytes with finite scales (every bit pattern) when `random_bytes`; emax bounds their
// fp16 exponents as in random_row.
inline Weight make_weight(GgmlType type, int64_t rows, int64_t cols, std::mt19937_64& rng,
                          bool random_bytes = false, int emax = 30) {
    Weight w{type, rows, cols, {}, {}};
    const size_t rb = ggml_row_bytes(type, cols);
    w.data.resize(rb * rows);
    std::normal_distribution<float> nd(0.f, 1.f / std::sqrt(static_cast<float>(cols)));
    std::vector<float> src(cols);
    for (int64_t r = 0; r < rows; ++r) {
        if (random_bytes) {
            const auto row = random_row(type, cols, rng, emax);
            std::memcpy(w.data.data() + r * rb, row.data(), rb);
        } else {
            for (auto& v : src) v = nd(rng);
            quantize_row(type, src.data(), w.data.data() + r * rb, cols);
        }
    }
    WeightView v;
    v.type = type;
    v.data = w.data.data();
    v.rows = rows;
    v.cols = cols;
    v.row_bytes = rb;
    w.m = Matrix::prepare(v);
    return w;
}

// The exact weights matmul multiplies by: w dequantized, rows x cols floats.
inline std::vector<float> dequantize_weight(const Weight& w) {
    std::vector<float> wf(w.rows * w.cols);
    dequantize_row(w.type, w.data.data(), wf.data(), w.rows * w.cols);
    return wf;
}

// n rows of ldx N(0, 1) activations.
inline std::vector<float> random_normal_x(int64_t n, int64_t ldx, std::mt19937_64& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x(n * ldx);
    for (auto& v : x) v = nd(rng);
    return x;
}

// Row pieces (matmul_rows) at odd boundaries must reproduce `full` (n tokens, strides ldx /
// ldy) bit for bit. Call through ASSERT_NO_FATAL_FAILURE.
inline void check_row_split(const Weight& w, const std::vector<float>& x, int64_t ldx, const std::vector<float>& full,
                            int64_t ldy, int64_t n, ThreadPool& pool, ActQuant aq, const std::string& what) {
    std::vector<float> y(n * ldy, 0.f);
    const int64_t cuts[] = {0, std::min<int64_t>(1, w.rows), std::min<int64_t>(5, w.rows),
                            std::min<int64_t>(22, w.rows), w.rows};
    for (int i = 0; i + 1 < 5; ++i) matmul_rows(w.m, cuts[i], cuts[i + 1], x.data(), ldx, y.data(), ldy, n, pool, aq);
    for (int64_t t = 0; t < n; ++t)
        ASSERT_EQ(first_bit_diff(y.data() + t * ldy, full.data() + t * ldy, w.rows), -1) << what << " row split";
}

// The SIMD levels of force_cpu_isa() (kernels/cpu/matmul_internal.h), lowest first. Each must
// give the scalar reference's bits; a test of a level this CPU lacks skips with the reason.
inline const std::vector<std::string>& simd_isas() {
    static const std::vector<std::string> v = {"avx2", "avx2vnni", "avx512", "avx512vnni"};
    return v;
}
inline std::string isa_skip_reason(const std::string& isa) {
    return "this CPU cannot run the " + isa + " kernels (CPUID/XGETBV), so they are not tested here";
}

// RAII: forces an ISA for a scope, back to "auto" after.
struct ForcedIsa {
    bool ok;
    explicit ForcedIsa(const std::string& isa) : ok(force_cpu_isa(isa.c_str())) {}
    ~ForcedIsa() { force_cpu_isa("auto"); }
    ForcedIsa(const ForcedIsa&) = delete;
    ForcedIsa& operator=(const ForcedIsa&) = delete;
};

// w times x (n tokens, ldx = cols) with the kernels of `isa` (on `wi`: w's weight, or a copy of
// it repacked under that ISA) and with the scalar fallback on w, then back to "auto": the two
// must agree bit for bit. check_isa_name: also expect cpu_isa_name() to say "scalar" once
// forced; random_bytes is reported in the failure message. Call through ASSERT_NO_FATAL_FAILURE.
inline void check_isa_matches_scalar(const Weight& w, const Matrix& wi, const std::vector<float>& x, int64_t n,
                                     ThreadPool& pool, ActQuant aq, const std::string& isa, bool random_bytes,
                                     bool check_isa_name) {
    std::vector<float> ya(n * w.rows), ys(n * w.rows);
    ASSERT_TRUE(force_cpu_isa(isa.c_str()));
    matmul(wi, x.data(), w.cols, ya.data(), w.rows, n, pool, aq);
    ASSERT_TRUE(force_cpu_isa("scalar"));
    if (check_isa_name) {
        EXPECT_STREQ(cpu_isa_name(), "scalar");
    }
    matmul(w.m, x.data(), w.cols, ys.data(), w.rows, n, pool, aq);
    force_cpu_isa("auto");
    const int64_t i = first_bit_diff(ya.data(), ys.data(), n * w.rows);
    ASSERT_EQ(i, -1) << isa << " " << ggml_type_name(w.type) << " cols " << w.cols << " n " << n << " random bytes "
                     << random_bytes << (wi.packed() ? " repacked" : "") << ": " << ya[i] << " scalar " << ys[i];
}

}  // namespace pipelm::kernels::testing
