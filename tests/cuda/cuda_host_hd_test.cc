// The per-element device code, compiled for the host (kernels/cuda/hd.h shim), bit for bit
// against the CPU kernels, without a GPU: the fp16 / bf16 conversions (every f16 and bf16 value,
// a million f32 values and the edge cases), the decoders of all 13 weight types at the
// granularity the kernels call them (quant.cuh decode8 per 8 values of a block, decode8_at along
// a row, unpack16 per 16 bytes, load_element per value) on random blocks with special scales
// (±0, subnormal, max, ±inf, NaN f16), the CPU's exp through kernels::swiglu, the attention
// softmax pieces through kernels::attention, and the RoPE rotation through kernels::rope_norm.
//
// NaN: GPU arithmetic and cvt.f32.f16 write the canonical NaN 0x7fffffff where x86 keeps a
// NaN's payload; the host shim emulates the GPU, so a NaN is compared as "both NaN".
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/hd.h"
#include "kernels/cuda/hd_math.h"
#include "kernels/cuda/quant.cuh"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/fp16.h"
#include "runtime/base/thread_pool.h"
#include "tests/kernels/kernels_test_util.h"

#if __has_include(<cuda_fp16.h>)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define PIPELM_HAVE_CUDA_FP16_HOST 1
#endif

namespace pipelm::cudatest {
namespace {

namespace hd = kernels::cuda::hd;
namespace kd = kernels::cuda::detail;
namespace kt = kernels::testing;

bool is_nan(float f) { return f != f; }

// Same bits, or both NaN. Returns "" or a description of the difference.
std::string same(float got, float want) {
    if (is_nan(got) && is_nan(want)) return "";
    if (kt::f2u(got) == kt::f2u(want)) return "";
    char buf[96];
    std::snprintf(buf, sizeof buf, "device %.9g (0x%08x) vs cpu %.9g (0x%08x)", got, kt::f2u(got), want, kt::f2u(want));
    return buf;
}

// ---- conversions -------------------------------------------------------------------------------

TEST(CudaHostHd, F16ToF32EveryValue) {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float got = hd::f16_to_f32(static_cast<uint16_t>(h)), want = fp16_to_f32(static_cast<uint16_t>(h));
        ASSERT_EQ(same(got, want), "") << "f16 0x" << std::hex << h;
        if (is_nan(want)) {
            ASSERT_EQ(kt::f2u(got), hd::kCanonicalNan) << "f16 0x" << std::hex << h;
        }
#ifdef PIPELM_HAVE_CUDA_FP16_HOST
        // NVIDIA's host emulation of cvt.f32.f16, bit for bit (NaN included).
        ASSERT_EQ(kt::f2u(got), kt::f2u(__half2float(__ushort_as_half(static_cast<unsigned short>(h)))))
            << "f16 0x" << std::hex << h;
#endif
    }
}

TEST(CudaHostHd, Bf16ToF32EveryValue) {
    for (uint32_t h = 0; h < 65536; ++h)
        ASSERT_EQ(kt::f2u(hd::bf16_to_f32(static_cast<uint16_t>(h))), kt::f2u(bf16_to_f32(static_cast<uint16_t>(h))))
            << "bf16 0x" << std::hex << h;
}

// f32 inputs: every 4099th bit pattern (all exponents and signs), random ones, and the
// rounding edges of both 16-bit formats (ties, the f16 subnormal range, 65504 / 65520, ±inf).
std::vector<uint32_t> f32_inputs() {
    std::vector<uint32_t> v;
    for (uint64_t u = 0; u < (1ull << 32); u += 4099) v.push_back(static_cast<uint32_t>(u));
    std::mt19937 rng(7);
    for (int i = 0; i < 200000; ++i) v.push_back(rng());
    for (uint32_t base : {0x33000000u, 0x33800000u, 0x38800000u, 0x387fc000u, 0x477fe000u, 0x477ff000u, 0x3f800000u,
                          0x7f800000u, 0x00000001u, 0x3f808000u, 0x3f818000u})
        for (uint32_t d = 0; d < 0x4000; d += 0x3f)
            for (uint32_t s : {0u, 0x80000000u}) {
                v.push_back(((base + d) & 0x7fffffffu) | s);
                v.push_back(((base - d) & 0x7fffffffu) | s);
            }
    return v;
}

TEST(CudaHostHd, F32ToF16AndBf16RoundLikeTheCpu) {
    for (uint32_t u : f32_inputs()) {
        const float f = kt::u2f(u);
        const uint16_t h = hd::f32_to_f16(f), b = hd::f32_to_bf16(f);
        if (is_nan(f)) {
            ASSERT_EQ(h, 0x7fff) << std::hex << u;
            ASSERT_EQ(b, 0x7fff) << std::hex << u;
        } else {
            ASSERT_EQ(h, f32_to_fp16(f)) << "f32 0x" << std::hex << u;  // kernels::store_row's f16
            ASSERT_EQ(b, f32_to_bf16(f)) << "f32 0x" << std::hex << u;
        }
#ifdef PIPELM_HAVE_CUDA_FP16_HOST
        ASSERT_EQ(h, __half_as_ushort(__float2half_rn(f))) << "f32 0x" << std::hex << u;
        ASSERT_EQ(b, __bfloat16_as_ushort(__float2bfloat16_rn(f))) << "f32 0x" << std::hex << u;
#endif
    }
}

TEST(CudaHostHd, BytePermAndTheIq4Codebook) {
    const int kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    for (uint32_t q = 0; q < 16; ++q) EXPECT_EQ(kd::iq4nl_value(q), kv[q]) << q;
    // Bytes 1, 3, 5, 7 of y:x into bytes 0-3, and byte 0 everywhere.
    EXPECT_EQ(hd::byte_perm(0x33221100u, 0x77665544u, 0x7531u), 0x77553311u);
    EXPECT_EQ(hd::byte_perm(0x33221100u, 0x77665544u, 0x0000u), 0x00000000u);
    EXPECT_EQ(hd::byte_perm(0x33221100u, 0x77665544u, 0x4444u), 0x44444444u);
}

// ---- decoders ----------------------------------------------------------------------------------

// An f16 scale: ±0, subnormal, the largest finite, ±inf, NaN, or random finite of any exponent.
uint16_t special_half(std::mt19937_64& rng) {
    switch (rng() % 10) {
        case 0: return static_cast<uint16_t>(rng() & 0x8000);                            // ±0
        case 1: return static_cast<uint16_t>((rng() & 0x8000) | (1 + rng() % 0x3ff));    // subnormal
        case 2: return static_cast<uint16_t>((rng() & 0x8000) | 0x7bff);                 // ±65504
        case 3: return static_cast<uint16_t>((rng() & 0x8000) | 0x7c00);                 // ±inf
        case 4: return static_cast<uint16_t>((rng() & 0x8000) | 0x7c00 | (1 + rng() % 0x3ff));  // NaN
        default: return kt::random_finite_half(rng);
    }
}

// A row of n values of `type`: random bytes (every code, extreme codes included), the f16
// scale fields replaced by special_half() values.
std::vector<uint8_t> special_row(GgmlType type, int64_t n, std::mt19937_64& rng) {
    const auto& ti = ggml_type_info(type);
    std::vector<uint8_t> row(ggml_row_bytes(type, n));
    for (auto& c : row) c = static_cast<uint8_t>(rng());
    for (int64_t i = 0; i < n / ti.block; ++i)
        for (int off : kt::half_fields(type)) {
            const uint16_t h = special_half(rng);
            std::memcpy(row.data() + i * ti.block_bytes + off, &h, 2);
        }
    if (type == GgmlType::kF16)  // every f16 pattern is a value: special ones on a third of them
        for (int64_t i = 0; i < n; i += 3) {
            const uint16_t h = special_half(rng);
            std::memcpy(row.data() + 2 * i, &h, 2);
        }
    return row;
}

template <GgmlType T>
void check_block_type(int n_rows, uint64_t seed) {
    constexpr int kValues = kd::block_values(T);
    const int64_t n = 4 * kValues;  // four blocks per row: decode8_at crosses block boundaries
    std::mt19937_64 rng(seed);
    std::vector<float> ref(n);
    for (int r = 0; r < n_rows; ++r) {
        const auto row = special_row(T, n, rng);
        kernels::dequantize_row(T, row.data(), ref.data(), n);
        for (int64_t c0 = 0; c0 < n; c0 += 8) {
            float y[8], z[8];
            kd::decode8_at<T>(row.data(), c0, y);  // as the kernels: 8 values per lane
            kd::decode8<T>(row.data() + (c0 / kValues) * kd::block_bytes(T), static_cast<int>(c0 % kValues), z);
            for (int k = 0; k < 8; ++k) {
                ASSERT_EQ(same(y[k], ref[c0 + k]), "") << ggml_type_name(T) << " row " << r << " value " << c0 + k;
                ASSERT_EQ(kt::f2u(y[k]), kt::f2u(z[k]));
            }
        }
    }
}

TEST(CudaHostHd, BlockDecodersMatchDequantizeRow) {
    const int rows = 3000;  // x4 blocks (x1 for the 256-value types' 8 sub-blocks each) per type
    check_block_type<GgmlType::kQ4_0>(rows, 1);
    check_block_type<GgmlType::kQ4_1>(rows, 2);
    check_block_type<GgmlType::kQ5_0>(rows, 3);
    check_block_type<GgmlType::kQ5_1>(rows, 4);
    check_block_type<GgmlType::kQ8_0>(rows, 5);
    check_block_type<GgmlType::kIQ4_NL>(rows, 6);
    check_block_type<GgmlType::kQ4_K>(rows, 7);
    check_block_type<GgmlType::kQ5_K>(rows, 8);
    check_block_type<GgmlType::kQ6_K>(rows, 9);
    check_block_type<GgmlType::kIQ4_XS>(rows, 10);
}

template <kd::FloatKind K>
void check_float_type(uint64_t seed) {
    constexpr GgmlType T = kd::type_of(K);
    constexpr int V = kd::values_per_16<K>();
    const int64_t n = 4096;
    std::mt19937_64 rng(seed);
    std::vector<float> ref(n);
    for (int r = 0; r < 64; ++r) {
        auto row = special_row(T, n, rng);  // f32 / bf16: any bit pattern, NaN and inf included
        kernels::dequantize_row(T, row.data(), ref.data(), n);
        for (int64_t c = 0; c < n; ++c)  // the scalar paths: one value per thread
            ASSERT_EQ(same(kd::load_element(T, row.data(), c), ref[c]), "") << ggml_type_name(T) << " value " << c;
        for (int64_t c0 = 0; c0 < n; c0 += V) {  // the GEMV / dequantizer: 16 bytes per load
            uint32_t words[4];
            std::memcpy(words, row.data() + c0 * ggml_type_info(T).block_bytes, 16);
            float f[8];
            kd::unpack16<K>(words, f);
            for (int k = 0; k < V; ++k)
                ASSERT_EQ(same(f[k], ref[c0 + k]), "") << ggml_type_name(T) << " value " << c0 + k;
        }
    }
}

TEST(CudaHostHd, FloatTypeLoadsMatchDequantizeRow) {
    check_float_type<kd::FloatKind::kF32>(11);
    check_float_type<kd::FloatKind::kF16>(12);
    check_float_type<kd::FloatKind::kBF16>(13);
}

// ---- exp and SwiGLU --------------------------------------------------------------------------

// hd::silu_mul (the device's SwiGLU) vs kernels::swiglu on the AVX2 path and the scalar one:
// g over the whole float range with emphasis on |g| < 110 (where exp neither saturates nor
// flushes), special values, and u of any sign and magnitude.
TEST(CudaHostHd, SwigluAndExpMatchTheCpu) {
    std::mt19937 rng(17);
    std::uniform_real_distribution<float> small(-110.f, 110.f), expo(-30.f, 30.f);
    const int64_t n_ff = 1 << 20;
    std::vector<float> gu(2 * n_ff), out(n_ff);
    for (int64_t i = 0; i < n_ff; ++i) {
        float g;
        switch (i % 8) {
            case 0: g = kt::u2f(rng()); break;  // any bit pattern
            case 1: g = std::ldexp(1.f, static_cast<int>(expo(rng))) * (rng() & 1 ? 1.f : -1.f); break;
            default: g = small(rng); break;
        }
        if (i < 8) g = std::vector<float>{0.f, -0.f, INFINITY, -INFINITY, NAN, 1e-45f, -88.7f, 88.7f}[i];
        gu[i] = g;
        gu[n_ff + i] = std::ldexp(small(rng), static_cast<int>(expo(rng)) / 3);
    }
    ThreadPool pool(2);
    for (const char* isa : {"auto", "scalar"}) {
        if (!kernels::force_cpu_isa(isa)) continue;
        kernels::swiglu(gu.data(), out.data(), 1, n_ff, pool);
        for (int64_t i = 0; i < n_ff; ++i)
            ASSERT_EQ(same(hd::silu_mul(gu[i], gu[n_ff + i]), out[i]), "")
                << isa << " g " << gu[i] << " u " << gu[n_ff + i];
    }
    kernels::force_cpu_isa("auto");
}

// ---- attention softmax ---------------------------------------------------------------------

// The device's order of the double sum of n numerators: thread i < 128 adds p_j for j = i,
// i + 128, ... (hd::softmax_sum_add), each warp of 32 folds by xor-butterfly (offsets 16 .. 1),
// then warp 0 folds the four warp sums (the other lanes 0) the same way (common.cuh block_sum).
double device_sum(const std::vector<float>& p) {
    double t[128] = {};
    for (size_t j = 0; j < p.size(); ++j) t[j % 128] = hd::softmax_sum_add(t[j % 128], p[j]);
    auto warp_fold = [](double* v) {
        for (int o = 16; o > 0; o >>= 1) {
            double w[32];
            for (int l = 0; l < 32; ++l) w[l] = v[l] + v[l ^ o];
            std::memcpy(v, w, sizeof w);
        }
        return v[0];
    };
    double parts[32] = {};
    for (int w = 0; w < 4; ++w) parts[w] = warp_fold(t + 32 * w);
    return warp_fold(parts);
}

// The CPU's order (attention_cpu.cc): lane l < 8 sums p_j for j ≡ l (mod 8) below n & ~7, then
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then the tail in order.
double cpu_sum(const std::vector<float>& p) {
    double l[8] = {};
    const size_t n8 = p.size() & ~size_t{7};
    for (size_t j = 0; j < n8; ++j) l[j & 7] += p[j];
    double s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    for (size_t j = n8; j < p.size(); ++j) s += p[j];
    return s;
}

// kernels::attention on rows built so that its output exposes the softmax: q = (q0, 0, ...),
// K_j = (k_j, 0, ...) make every score fl(fl(q0 k_j) scale) on both sides, and V = identity makes
// out[c] = fl(p_c / sum) (with 1/sum in float). The device's pieces (hd_math.h: max, exp, sum,
// 1/sum, the final multiply) must give those bits; the sum itself is compared in both orders.
TEST(CudaHostHd, SoftmaxPiecesMatchCpuAttention) {
    const int hd_ = 128, n_head = 1;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
    std::mt19937 rng(23);
    std::uniform_real_distribution<float> spread(0.1f, 300.f), unit(-1.f, 1.f);
    ThreadPool pool(2);
    int rows = 0, inv_differs = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        const int n = 1 + static_cast<int>(rng() % hd_);
        const float width = spread(rng);  // scores spread over [-width, width] / ... : exp underflows for wide ones
        std::vector<float> q(hd_, 0.f), k(static_cast<size_t>(n) * hd_, 0.f), v(static_cast<size_t>(n) * hd_, 0.f);
        q[0] = 1.f + unit(rng) * 0.5f;
        for (int j = 0; j < n; ++j) {
            k[static_cast<size_t>(j) * hd_] = unit(rng) * width;
            v[static_cast<size_t>(j) * hd_ + j] = 1.f;
        }
        if (trial % 7 == 0) k[0] = k[static_cast<size_t>(n - 1) * hd_];  // a tie for the maximum
        std::vector<float> out(hd_, -1.f);
        const void* kr = k.data();
        const void* vr = v.data();
        const int32_t nkv = n;
        kernels::AttentionArgs a;
        a.q = q.data();
        a.ldq = hd_;
        a.out = out.data();
        a.ldo = hd_;
        a.n_tokens = 1;
        a.n_head = n_head;
        a.n_head_kv = 1;
        a.head_dim = hd_;
        a.scale = scale;
        a.k_rows = &kr;
        a.v_rows = &vr;
        a.n_kv = &nkv;
        a.k_type = a.v_type = GgmlType::kF32;
        kernels::attention(a, pool);
        // The device, step by step.
        std::vector<float> s(n), p(n);
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
            s[j] = hd::mul(hd::mul(q[0], k[static_cast<size_t>(j) * hd_]), scale);
            mx = hd::softmax_max(mx, s[j]);
        }
        for (int j = 0; j < n; ++j) p[j] = hd::softmax_exp(s[j], mx);
        const float inv_cpu_order = hd::softmax_inv(cpu_sum(p)), inv_dev = hd::softmax_inv(device_sum(p));
        for (int c = 0; c < n; ++c) {
            // out = (Σ_j p_j V_j[c]) · inv = p_c · inv: the pieces, with the CPU's order of the sum.
            ASSERT_EQ(same(hd::mul(p[c], inv_cpu_order), out[c]), "") << "n " << n << " c " << c << " width " << width;
        }
        ++rows;
        if (inv_dev != inv_cpu_order) {
            ++inv_differs;  // a rounding tie of 1/sum between the two orders: at most one ulp
            EXPECT_LE(std::fabs(inv_dev - inv_cpu_order), std::ldexp(std::fabs(inv_dev), -23)) << "n " << n;
        }
    }
    std::printf("softmax: %d rows, 1/sum differs between the device's and the CPU's order of the sum in %d\n", rows,
                inv_differs);
    EXPECT_LE(inv_differs, rows / 1000);
}

// ---- RoPE --------------------------------------------------------------------------------------

// hd::rope_rotate over kernels::rope_table vs kernels::rope_norm, GLM-4-32B's layout (48 heads,
// head_dim 128, n_rot 64, base 10000) at positions up to 32767.
TEST(CudaHostHd, RopeRotationMatchesCpu) {
    const int n_heads = 48, head_dim = 128, n_rot = 64, n_pos = 32768;
    const int64_t ld = static_cast<int64_t>(n_heads) * head_dim, n_tokens = 64;
    std::vector<float> cs(static_cast<size_t>(n_pos) * n_rot);
    kernels::rope_table(cs.data(), n_pos, n_rot, 10000.f);
    std::mt19937 rng(29);
    std::uniform_real_distribution<float> d(-1.f, 1.f), e(-20.f, 20.f);
    std::vector<float> x(static_cast<size_t>(n_tokens * ld));
    for (auto& v : x) v = std::ldexp(d(rng), static_cast<int>(e(rng)));
    std::vector<int32_t> pos(n_tokens);
    for (auto& p : pos) p = static_cast<int32_t>(rng() % n_pos);
    pos[0] = 0, pos[1] = n_pos - 1;
    std::vector<float> ref = x;
    kernels::rope_norm(ref.data(), ld, n_tokens, n_heads, head_dim, n_rot, pos.data(), cs.data());
    for (int64_t t = 0; t < n_tokens; ++t)
        for (int h = 0; h < n_heads; ++h)
            for (int i = 0; i < head_dim; i += 2) {
                const size_t at = static_cast<size_t>(t * ld + h * head_dim + i);
                float y0 = x[at], y1 = x[at + 1];
                if (i < n_rot) {
                    const float* c = cs.data() + static_cast<size_t>(pos[t]) * n_rot + i;
                    hd::rope_rotate(x[at], x[at + 1], c[0], c[1], &y0, &y1);
                }
                ASSERT_EQ(same(y0, ref[at]), "") << "token " << t << " head " << h << " dim " << i;
                ASSERT_EQ(same(y1, ref[at + 1]), "") << "token " << t << " head " << h << " dim " << i + 1;
            }
}

}  // namespace
}  // namespace pipelm::cudatest
