// dequantize_row against the independent reference on random blocks (bit-exact), and the
// round-to-nearest quantizers (round trip error per type).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/quant.h"
#include "kernels_test_util.h"
#include "runtime/base/error.h"
#include "runtime/base/fp16.h"

namespace pipelm::kernels {
namespace {

using testing::all_types;
using testing::first_bit_diff;
using testing::random_row;
using testing::ref_dequantize;

TEST(Dequantize, RandomBlocksBitExactWithReference) {
    std::mt19937_64 rng(1234);
    for (GgmlType type : all_types()) {
        const int64_t qk = ggml_type_info(type).block;
        const int64_t n = qk == 1 ? 4099 : qk * 97;
        for (int rep = 0; rep < 20; ++rep) {
            const auto row = random_row(type, n, rng);
            std::vector<float> got(n);
            dequantize_row(type, row.data(), got.data(), n);
            const auto want = ref_dequantize(type, row.data(), n);
            const int64_t i = first_bit_diff(got.data(), want.data(), n);
            ASSERT_EQ(i, -1) << ggml_type_name(type) << " element " << i << ": got " << got[i] << " want " << want[i];
        }
    }
}

TEST(Dequantize, Fp16AllFiniteValuesExact) {
    std::vector<uint16_t> h;
    for (uint32_t v = 0; v < 65536; ++v)
        if (((v >> 10) & 31) != 31) h.push_back(static_cast<uint16_t>(v));
    std::vector<float> got(h.size());
    dequantize_row(GgmlType::kF16, h.data(), got.data(), static_cast<int64_t>(h.size()));
    for (size_t i = 0; i < h.size(); ++i)
        ASSERT_EQ(testing::f2u(got[i]), testing::f2u(testing::ref_half(h[i]))) << "half bits " << h[i];
}

TEST(Dequantize, RejectsBadLengthAndType) {
    std::vector<uint8_t> buf(1024);
    std::vector<float> out(512);
    EXPECT_THROW(dequantize_row(GgmlType::kQ4_0, buf.data(), out.data(), 33), Error);
    EXPECT_THROW(dequantize_row(GgmlType::kQ4_K, buf.data(), out.data(), 128), Error);
    EXPECT_THROW(dequantize_row(GgmlType::kQ2_K, buf.data(), out.data(), 256), Error);
    EXPECT_FALSE(quant_type_supported(GgmlType::kQ8_1));
    for (GgmlType t : all_types()) EXPECT_TRUE(quant_type_supported(t)) << ggml_type_name(t);
}

// Relative RMS error of quantize -> dequantize on N(0,1) data with a few outliers, against
// bounds a little above what a plain round-to-nearest quantizer of that bit width gives
// (step/sqrt(12) relative to the block's spread).
TEST(Quantize, RoundTripError) {
    struct Bound {
        GgmlType type;
        double max_rel_rms;
    };
    const Bound bounds[] = {
        {GgmlType::kF32, 0.0},      {GgmlType::kF16, 5e-4},    {GgmlType::kBF16, 4e-3},
        {GgmlType::kQ8_0, 0.008},   {GgmlType::kQ6_K, 0.03},   {GgmlType::kQ5_0, 0.055},
        {GgmlType::kQ5_1, 0.045},   {GgmlType::kQ5_K, 0.05},   {GgmlType::kQ4_0, 0.11},
        {GgmlType::kQ4_1, 0.09},    {GgmlType::kQ4_K, 0.10},   {GgmlType::kIQ4_NL, 0.10},
        {GgmlType::kIQ4_XS, 0.10},
    };
    std::mt19937_64 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    const int64_t n = 256 * 64;
    std::vector<float> x(n);
    for (auto& v : x) v = nd(rng);
    for (int i = 0; i < 16; ++i) x[rng() % n] *= 6.f;  // outliers
    for (const auto& b : bounds) {
        std::vector<uint8_t> q(ggml_row_bytes(b.type, n));
        quantize_row(b.type, x.data(), q.data(), n);
        std::vector<float> y(n);
        dequantize_row(b.type, q.data(), y.data(), n);
        double err = 0, ref = 0;
        for (int64_t i = 0; i < n; ++i) {
            err += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
            ref += double(x[i]) * x[i];
        }
        const double rel = std::sqrt(err / ref);
        EXPECT_LE(rel, b.max_rel_rms) << ggml_type_name(b.type);
        RecordProperty(std::string("rel_rms_") + ggml_type_name(b.type), std::to_string(rel));
        std::printf("  %-7s rel RMS error %.5f (bound %.4f)\n", ggml_type_name(b.type), rel, b.max_rel_rms);
    }
}

TEST(Quantize, ScaledDataAndSpecialBlocks) {
    // Zero blocks, constant blocks, tiny and large magnitudes: finite output, small error.
    std::mt19937_64 rng(99);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (GgmlType type : all_types()) {
        const int64_t qk = std::max<int64_t>(ggml_type_info(type).block, 32);
        const int64_t n = 4 * 256;
        for (float scale : {0.f, 1e-3f, 1.f, 300.f}) {
            for (int constant = 0; constant < 2; ++constant) {
                std::vector<float> x(n);
                for (int64_t i = 0; i < n; ++i) x[i] = scale * (constant ? 1.f : nd(rng));
                std::vector<uint8_t> q(ggml_row_bytes(type, n));
                quantize_row(type, x.data(), q.data(), n);
                std::vector<float> y(n);
                dequantize_row(type, q.data(), y.data(), n);
                double err = 0, ref = 0;
                for (int64_t i = 0; i < n; ++i) {
                    ASSERT_TRUE(std::isfinite(y[i])) << ggml_type_name(type) << " scale " << scale;
                    err += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
                    ref += double(x[i]) * x[i];
                }
                if (scale == 0.f) {
                    EXPECT_EQ(err, 0.0) << ggml_type_name(type);
                } else {
                    EXPECT_LE(std::sqrt(err / ref), 0.12) << ggml_type_name(type) << " scale " << scale
                                                          << " constant " << constant << " block " << qk;
                }
            }
        }
    }
}

TEST(Quantize, Q8_0MatchesSpecFormula) {
    // d = amax/127 (stored fp16), q = round(x/d): check the stored bytes directly.
    std::vector<float> x(32);
    for (int i = 0; i < 32; ++i) x[i] = (i - 13) * 0.37f;
    uint8_t b[34];
    quantize_row(GgmlType::kQ8_0, x.data(), b, 32);
    const float d = fp16_to_f32(static_cast<uint16_t>(b[0] | b[1] << 8));
    EXPECT_EQ(d, fp16_to_f32(f32_to_fp16(18 * 0.37f / 127.f)));
    for (int i = 0; i < 32; ++i) EXPECT_EQ(static_cast<int8_t>(b[2 + i]), static_cast<int>(std::lround(x[i] / d)));
}

}  // namespace
}  // namespace pipelm::kernels
