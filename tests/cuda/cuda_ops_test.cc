// Every CUDA launcher of kernels/cuda/ops_cuda.h against its CPU twin (kernels/ops.h, matmul.h,
// quant.h) on odd sizes and strided rows. Outputs are poisoned with NaN before each launch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cuda/hd.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "runtime/base/fp16.h"
#include "runtime/base/thread_pool.h"
#include "tests/cuda/cuda_test_util.h"

namespace pipelm::cudatest {
namespace {

using kernels::cuda::Accum;

class CudaOps : public DeviceTest {};

// Rows of `type` holding random values in [-1, 1] (quantized as the file would hold them).
std::vector<uint8_t> random_rows(GgmlType type, int64_t rows, int64_t cols, uint32_t seed) {
    const size_t rb = ggml_row_bytes(type, cols);
    std::vector<uint8_t> out(rb * rows);
    const auto v = random_vec(static_cast<size_t>(rows * cols), seed);
    for (int64_t r = 0; r < rows; ++r) kernels::quantize_row(type, v.data() + r * cols, out.data() + r * rb, cols);
    return out;
}

TEST_F(CudaOps, RmsNormMatchesCpuOnOddSizes) {
    for (int64_t n : {1, 31, 4097}) {
        const int64_t rows = 3, ldx = n + 3, ldy = n + 1;
        const auto x = random_vec(rows * ldx, 1 + n, -3.f, 3.f);
        const auto w = random_vec(n, 7, 0.5f, 1.5f);
        std::vector<float> ref(rows * ldy, 0.f);
        kernels::rms_norm(x.data(), ldx, w.data(), ref.data(), ldy, rows, n, 1e-5f, pool);
        auto dx = to_device(x), dw = to_device(w);
        auto dy = poisoned(rows * ldy);
        kc::rms_norm(dx.as<float>(), ldx, dw.as<float>(), dy.as<float>(), ldy, rows, n, 1e-5f, false, stream);
        const auto y = to_host<float>(dy, rows * ldy);
        for (int64_t r = 0; r < rows; ++r) EXPECT_LE(max_rel(&y[r * ldy], &ref[r * ldy], n), 1e-6) << "n " << n;

        // In place (x and y alias), and fused with the residual add.
        std::vector<float> xin = x;
        kernels::rms_norm(xin.data(), ldx, w.data(), xin.data(), ldx, rows, n, 1e-5f, pool);
        kc::rms_norm(dx.as<float>(), ldx, dw.as<float>(), dx.as<float>(), ldx, rows, n, 1e-5f, false, stream);
        const auto yin = to_host<float>(dx, rows * ldx);
        for (int64_t r = 0; r < rows; ++r) EXPECT_LE(max_rel(&yin[r * ldx], &xin[r * ldx], n), 1e-6) << "in place, n " << n;

        const auto base = random_vec(rows * ldy, 99 + n, -2.f, 2.f);
        std::vector<float> acc = base;
        for (int64_t r = 0; r < rows; ++r) kernels::add_inplace(&acc[r * ldy], &ref[r * ldy], n);
        auto dacc = to_device(base);
        auto dx2 = to_device(x);
        kc::rms_norm(dx2.as<float>(), ldx, dw.as<float>(), dacc.as<float>(), ldy, rows, n, 1e-5f, true, stream);
        const auto gacc = to_host<float>(dacc, rows * ldy);
        for (int64_t r = 0; r < rows; ++r) EXPECT_LE(max_rel(&gacc[r * ldy], &acc[r * ldy], n), 1e-6) << "accumulate, n " << n;
    }
}

TEST_F(CudaOps, RopeNormIsBitExact) {
    struct Case { int head_dim, n_rot; };
    for (const Case c : {Case{16, 8}, Case{96, 32}, Case{64, 64}}) {
        const int n_heads = 3, n_pos = 100;
        const int64_t n_tokens = 5, ld = n_heads * c.head_dim + 2;
        const std::vector<int32_t> pos = {0, 1, 17, 99, 5};
        std::vector<float> cs(static_cast<size_t>(n_pos) * c.n_rot);
        kernels::rope_table(cs.data(), n_pos, c.n_rot, 10000.f);
        auto x = random_vec(n_tokens * ld, 3 + c.head_dim, -4.f, 4.f);
        auto dx = to_device(x), dcs = to_device(cs), dpos = to_device(pos);
        kernels::rope_norm(x.data(), ld, n_tokens, n_heads, c.head_dim, c.n_rot, pos.data(), cs.data());
        kc::rope_norm(dx.as<float>(), ld, n_tokens, n_heads, c.head_dim, c.n_rot, dpos.as<int32_t>(), dcs.as<float>(), stream);
        const auto y = to_host<float>(dx, x.size());
        EXPECT_EQ(0, std::memcmp(y.data(), x.data(), x.size() * 4)) << c.head_dim << "/" << c.n_rot;  // hd::rope_rotate
    }
}

TEST_F(CudaOps, SwigluIsBitExact) {
    for (int64_t n_ff : {1, 31, 4097}) {
        const int64_t n_tokens = 3;
        const auto gu = random_vec(n_tokens * 2 * n_ff, 5 + n_ff, -8.f, 8.f);
        std::vector<float> ref(n_tokens * n_ff);
        kernels::swiglu(gu.data(), ref.data(), n_tokens, n_ff, pool);
        auto dgu = to_device(gu);
        auto dout = poisoned(ref.size());
        kc::swiglu(dgu.as<float>(), dout.as<float>(), n_tokens, n_ff, stream);
        const auto out = to_host<float>(dout, ref.size());
        // The CPU's exp and operation order (hd::silu_mul): the same bits, NaN-free inputs.
        EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * 4)) << n_ff;
    }
}

TEST_F(CudaOps, AddsAreExact) {
    const int64_t n = 4099;
    auto x = random_vec(n, 11), y = random_vec(n, 12);
    auto dx = to_device(x), dy = to_device(y);
    kc::add_inplace(dx.as<float>(), dy.as<float>(), n, stream);
    kernels::add_inplace(x.data(), y.data(), n);
    EXPECT_EQ(0, std::memcmp(to_host<float>(dx, n).data(), x.data(), n * 4));

    const int64_t rows = 3, cols = 37, ld = 41;
    auto m = random_vec(rows * ld, 13), b = random_vec(cols, 14);
    auto dm = to_device(m), db = to_device(b);
    kc::add_bias_rows(dm.as<float>(), ld, db.as<float>(), rows, cols, stream);
    for (int64_t r = 0; r < rows; ++r) kernels::add_inplace(&m[r * ld], b.data(), cols);
    EXPECT_EQ(0, std::memcmp(to_host<float>(dm, m.size()).data(), m.data(), m.size() * 4));
}

TEST_F(CudaOps, CheckFiniteFindsNanAndInf) {
    const int64_t n = 5000;
    auto flag_of = [&](const std::vector<float>& v) {
        auto dv = to_device(v);
        auto dflag = to_device(std::vector<int>{0});
        kc::check_finite(dv.as<float>(), static_cast<int64_t>(v.size()), dflag.as<int>(), stream);
        return to_host<int>(dflag, 1)[0];
    };
    auto x = random_vec(n, 21, -1e30f, 1e30f);
    EXPECT_EQ(flag_of(x), 0);
    x[4097] = NAN;
    EXPECT_EQ(flag_of(x), 1);
    x[4097] = 1.f;
    x[n - 1] = -INFINITY;
    EXPECT_EQ(flag_of(x), 1);
    EXPECT_EQ(flag_of({INFINITY}), 1);
    EXPECT_EQ(flag_of({3.f}), 0);
}

TEST_F(CudaOps, ArgmaxIsTheFirstMaximum) {
    const int64_t rows = 3, n = 4097, ld = 4100;
    auto x = random_vec(rows * ld, 31);
    x[0 * ld + 4096] = 5.f;
    x[0 * ld + 100] = 5.f;  // tie: the first one wins
    x[1 * ld + 0] = 7.f;
    x[2 * ld + 2049] = NAN;  // ignored
    auto dx = to_device(x);
    kc::DeviceBuffer dout(rows * sizeof(int32_t), "argmax");
    kc::argmax_rows(dx.as<float>(), ld, rows, n, dout.as<int32_t>(), stream);
    const auto got = to_host<int32_t>(dout, rows);
    EXPECT_EQ(got[0], 100);
    EXPECT_EQ(got[1], 0);
    int best = 0;
    for (int i = 1; i < n; ++i)
        if (x[2 * ld + i] > x[2 * ld + best]) best = i;
    EXPECT_EQ(got[2], best);
}

TEST_F(CudaOps, EmbeddingAndDequantizeAreBitExact) {
    const int64_t rows = 7, cols = 96;
    for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0}) {
        const auto table = random_rows(type, rows, cols, 41);
        const size_t rb = ggml_row_bytes(type, cols);
        std::vector<float> all(rows * cols);
        for (int64_t r = 0; r < rows; ++r) kernels::dequantize_row(type, table.data() + r * rb, &all[r * cols], cols);
        auto dtable = to_device(table);

        auto dd = poisoned(all.size());
        kc::dequantize_rows(type, dtable.get(), rb, rows, cols, dd.as<float>(), cols, stream);
        EXPECT_EQ(0, std::memcmp(to_host<float>(dd, all.size()).data(), all.data(), all.size() * 4)) << ggml_type_name(type);

        const std::vector<int32_t> ids = {3, 0, 6, 3};
        auto dids = to_device(ids);
        auto de = poisoned(ids.size() * cols);
        kc::embedding(type, dtable.get(), rb, dids.as<int32_t>(), static_cast<int64_t>(ids.size()), cols, de.as<float>(), stream);
        const auto e = to_host<float>(de, ids.size() * cols);
        for (size_t t = 0; t < ids.size(); ++t)
            EXPECT_EQ(0, std::memcmp(&e[t * cols], &all[ids[t] * cols], cols * 4)) << ggml_type_name(type) << " token " << t;
    }
}

// split_16 (the reduced-precision demonstrations' activations) on the device equals its host
// emulation (hd::f32_to_f16 / f32_to_bf16 after the power-of-two row scale) bit for bit: the
// rounding cuda_host_test's outlier emulation relies on.
TEST_F(CudaOps, Split16RoundsAsTheHostEmulation) {
    const int64_t rows = 3, n = 4097, ldx = 4099;
    auto x = random_vec(rows * ldx, 51);
    std::mt19937 rng(52);
    std::uniform_real_distribution<float> mag(-3.f, 5.5f);  // |x| from 1e-3 to 3e5: beyond FP16's 65504
    for (auto& v : x) v *= std::pow(10.f, mag(rng));
    auto dx = to_device(x);
    for (GgmlType t16 : {GgmlType::kBF16, GgmlType::kF16}) {
        const bool f16 = t16 == GgmlType::kF16;
        kc::DeviceBuffer out(rows * n * 2, "out"), sc(rows * 4, "scale");
        kc::split_16(t16, dx.as<float>(), ldx, rows, n, out.get(), f16 ? sc.as<float>() : nullptr, stream);
        const auto h = to_host<uint16_t>(out, rows * n);
        const auto s = f16 ? to_host<float>(sc, rows) : std::vector<float>(rows, 1.f);
        for (int64_t r = 0; r < rows; ++r) {
            float amax = 0;
            for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[r * ldx + i]));
            int e = 0;
            if (f16) (void)std::frexp(amax, &e);
            EXPECT_EQ(s[r], std::ldexp(1.f, e)) << "row " << r;
            for (int64_t i = 0; i < n; ++i) {
                const float v = x[r * ldx + i] * std::ldexp(1.f, -e);
                const uint16_t want = f16 ? kernels::cuda::hd::f32_to_f16(v) : kernels::cuda::hd::f32_to_bf16(v);
                ASSERT_EQ(h[r * n + i], want) << ggml_type_name(t16) << " row " << r << " value " << i;
            }
        }
    }
}

// matmul vs kernels::matmul (exact weights, FP32) for every device weight type, on the GEMV
// (n <= 8) and cuBLAS (n > 8) paths, vectorized and scalar column counts, strided x and y.
TEST_F(CudaOps, MatmulMatchesCpuForEveryDeviceType) {
    kc::CublasHandle blas(stream);
    const int64_t M = 37;
    struct Case { GgmlType type; int64_t K; };
    const Case cases[] = {{GgmlType::kF32, 96},  {GgmlType::kF32, 97},  {GgmlType::kF32, 4128},
                          {GgmlType::kF16, 96},  {GgmlType::kF16, 97},  {GgmlType::kF16, 4128},
                          {GgmlType::kBF16, 96}, {GgmlType::kBF16, 97}, {GgmlType::kBF16, 4128},
                          {GgmlType::kQ8_0, 96}, {GgmlType::kQ8_0, 4128}};
    for (const Case& c : cases) {
        const auto w = random_rows(c.type, M, c.K, 61 + static_cast<uint32_t>(c.K));
        kernels::WeightView view;
        view.type = c.type;
        view.data = w.data();
        view.rows = M;
        view.cols = c.K;
        view.row_bytes = ggml_row_bytes(c.type, c.K);
        const kernels::Matrix mat = kernels::Matrix::prepare(view);
        auto dw = to_device(w);
        kc::DeviceWeight dwv;
        dwv.type = c.type;
        dwv.data = dw.get();
        dwv.rows = M;
        dwv.cols = c.K;
        dwv.row_bytes = view.row_bytes;
        for (int64_t n : {1, 3, 8, 9, 33}) {
            for (int64_t pad : {0, 4, 1}) {
                const int64_t ldx = c.K + pad, ldy = M + 3;
                auto x = random_vec(n * ldx, 71 + n + pad, -2.f, 2.f);
                std::vector<float> ref(n * ldy, 0.f);
                kernels::matmul(mat, x.data(), ldx, ref.data(), ldy, n, pool);
                auto dx = to_device(x);
                auto dy = poisoned(n * ldy);
                const size_t wsb = kc::matmul_workspace_bytes(dwv, n, Accum::kF32);
                kc::DeviceBuffer ws(std::max<size_t>(wsb, 1), "workspace");
                kc::matmul(blas.get(), dwv, dx.as<float>(), ldx, dy.as<float>(), ldy, n, Accum::kF32, ws.get(), wsb, stream);
                const auto y = to_host<float>(dy, n * ldy);
                for (int64_t t = 0; t < n; ++t)
                    EXPECT_LE(row_rel_l2(&y[t * ldy], &ref[t * ldy], M), 1e-5)
                        << ggml_type_name(c.type) << " K " << c.K << " n " << n << " pad " << pad << " token " << t;
            }
        }
        // The GEMV kernel alone on a batch above kGemvMaxTokens (token chunks).
        const int64_t n = 19, ldx = c.K, ldy = M;
        auto x = random_vec(n * ldx, 81);
        std::vector<float> ref(n * ldy);
        kernels::matmul(mat, x.data(), ldx, ref.data(), ldy, n, pool);
        auto dx = to_device(x);
        auto dy = poisoned(n * ldy);
        kc::gemv(dwv, dx.as<float>(), ldx, dy.as<float>(), ldy, n, stream);
        const auto y = to_host<float>(dy, n * ldy);
        for (int64_t t = 0; t < n; ++t)
            EXPECT_LE(row_rel_l2(&y[t * ldy], &ref[t * ldy], M), 1e-5) << "gemv " << ggml_type_name(c.type) << " K " << c.K;
    }
}

// F16 weights with activations beyond 65504: the default path (exact F32 weights, FP32 GEMM) is
// exact; the FP16-accumulation demonstration (Accum::kF16) overflows.
TEST_F(CudaOps, MatmulF16WeightsWithGlm4RangeActivations) {
    kc::CublasHandle blas(stream);
    const int64_t M = 33, K = 256, n = 16;
    const auto w = random_rows(GgmlType::kF16, M, K, 91);
    kernels::WeightView view;
    view.type = GgmlType::kF16;
    view.data = w.data();
    view.rows = M;
    view.cols = K;
    view.row_bytes = ggml_row_bytes(GgmlType::kF16, K);
    const kernels::Matrix mat = kernels::Matrix::prepare(view);
    auto x = random_vec(n * K, 92, -2e5f, 2e5f);
    std::vector<float> ref(n * M);
    kernels::matmul(mat, x.data(), K, ref.data(), M, n, pool);
    auto dw = to_device(w), dx = to_device(x);
    kc::DeviceWeight dwv{GgmlType::kF16, dw.get(), M, K, view.row_bytes};
    for (Accum acc : {Accum::kF32, Accum::kF16}) {
        const size_t wsb = kc::matmul_workspace_bytes(dwv, n, acc);
        kc::DeviceBuffer ws(std::max<size_t>(wsb, 1), "workspace");
        auto dy = poisoned(n * M);
        kc::matmul(blas.get(), dwv, dx.as<float>(), K, dy.as<float>(), M, n, acc, ws.get(), wsb, stream);
        const auto y = to_host<float>(dy, n * M);
        if (acc == Accum::kF32) {
            for (int64_t t = 0; t < n; ++t) EXPECT_LE(row_rel_l2(&y[t * M], &ref[t * M], M), 1e-5) << "token " << t;
        } else {
            EXPECT_TRUE(kernels::has_non_finite(y.data(), n * M)) << "FP16 accumulation should overflow here";
        }
    }
}

TEST_F(CudaOps, KvStoreMatchesStoreRow) {
    for (GgmlType type : {GgmlType::kF32, GgmlType::kF16}) {
        const int n_ctx = 9, n_seq = 2;
        const int64_t kv_dim = 48, n = 4, ld = kv_dim + 5;
        const std::vector<int32_t> pos = {0, 8, 3, 4}, seq = {1, 0, 0, 1};
        const size_t rb = ggml_row_bytes(type, kv_dim), total = rb * n_ctx * n_seq;
        const auto k = random_vec(n * ld, 101), v = random_vec(n * ld, 102);
        std::vector<uint8_t> kh(total, 0), vh(total, 0);
        for (int64_t t = 0; t < n; ++t) {
            kernels::store_row(type, &k[t * ld], kh.data() + (seq[t] * n_ctx + pos[t]) * rb, kv_dim);
            kernels::store_row(type, &v[t * ld], vh.data() + (seq[t] * n_ctx + pos[t]) * rb, kv_dim);
        }
        auto dk = to_device(k), dv = to_device(v), dpos = to_device(pos), dseq = to_device(seq);
        auto dkc = to_device(std::vector<uint8_t>(total, 0)), dvc = to_device(std::vector<uint8_t>(total, 0));
        kc::kv_store(dk.as<float>(), ld, dv.as<float>(), ld, n, kv_dim, dpos.as<int32_t>(), dseq.as<int32_t>(), n_ctx, type,
                     dkc.get(), dvc.get(), stream);
        EXPECT_EQ(to_host<uint8_t>(dkc, total), kh) << ggml_type_name(type);
        EXPECT_EQ(to_host<uint8_t>(dvc, total), vh) << ggml_type_name(type);
    }
}

struct AttnSetup {
    int n_head = 4, n_head_kv = 2, head_dim = 16, n_ctx = 40, n_seq = 2;
    GgmlType kv_type = GgmlType::kF32;
    std::vector<int32_t> pos = {0, 7, 39, 3, 20};
    std::vector<int32_t> seq = {0, 0, 1, 1, 0};
    std::vector<uint8_t> kc_, vc_;  // [n_seq][n_ctx][kv_dim] of kv_type
    std::vector<float> q;
    int64_t ldq = 0, ldo = 0;

    int64_t n() const { return static_cast<int64_t>(pos.size()); }
    int64_t kv_dim() const { return static_cast<int64_t>(n_head_kv) * head_dim; }
    size_t row_bytes() const { return ggml_row_bytes(kv_type, kv_dim()); }

    void fill(uint32_t seed, float q_scale = 1.f, float k_scale = 1.f) {
        ldq = static_cast<int64_t>(n_head) * head_dim + 2;
        ldo = static_cast<int64_t>(n_head) * head_dim + 1;
        q = random_vec(n() * ldq, seed, -q_scale, q_scale);
        const size_t rows = static_cast<size_t>(n_seq) * n_ctx;
        kc_.assign(rows * row_bytes(), 0);
        vc_.assign(rows * row_bytes(), 0);
        const auto k = random_vec(rows * kv_dim(), seed + 1, -k_scale, k_scale);
        const auto v = random_vec(rows * kv_dim(), seed + 2, -1.f, 1.f);
        for (size_t r = 0; r < rows; ++r) {
            kernels::store_row(kv_type, &k[r * kv_dim()], kc_.data() + r * row_bytes(), kv_dim());
            kernels::store_row(kv_type, &v[r * kv_dim()], vc_.data() + r * row_bytes(), kv_dim());
        }
    }

    std::vector<float> cpu(ThreadPool& pool) const {
        std::vector<float> out(n() * ldo, 0.f);
        std::vector<const void*> kr(n()), vr(n());
        std::vector<int32_t> nkv(n());
        for (int64_t t = 0; t < n(); ++t) {
            kr[t] = kc_.data() + static_cast<size_t>(seq[t]) * n_ctx * row_bytes();
            vr[t] = vc_.data() + static_cast<size_t>(seq[t]) * n_ctx * row_bytes();
            nkv[t] = pos[t] + 1;
        }
        kernels::AttentionArgs a;
        a.q = q.data();
        a.ldq = ldq;
        a.out = out.data();
        a.ldo = ldo;
        a.n_tokens = n();
        a.n_head = n_head;
        a.n_head_kv = n_head_kv;
        a.head_dim = head_dim;
        a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        a.k_rows = kr.data();
        a.v_rows = vr.data();
        a.n_kv = nkv.data();
        a.k_type = a.v_type = kv_type;
        kernels::attention(a, pool);
        return out;
    }

    // global_scores: the scores in a device scratch; scores_tokens > 0: a scratch for that many
    // tokens only (the launcher splits the batch).
    std::vector<float> gpu(bool global_scores, Accum kq = Accum::kF32, Accum sv = Accum::kF32,
                           int64_t scores_tokens = 0) const {
        auto dq = to_device(q), dk = to_device(kc_), dv = to_device(vc_), dpos = to_device(pos), dseq = to_device(seq);
        auto dout = poisoned(n() * ldo);
        const int max_kv = *std::max_element(pos.begin(), pos.end()) + 1;
        kc::DeviceBuffer scores(static_cast<size_t>(n()) * n_head * max_kv * sizeof(float), "scores");
        kc::AttentionArgs a;
        a.q = dq.as<float>();
        a.ldq = ldq;
        a.out = dout.as<float>();
        a.ldo = ldo;
        a.n_tokens = n();
        a.n_head = n_head;
        a.n_head_kv = n_head_kv;
        a.head_dim = head_dim;
        a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        a.k_cache = dk.get();
        a.v_cache = dv.get();
        a.n_ctx = n_ctx;
        a.kv_type = kv_type;
        a.pos = dpos.as<int32_t>();
        a.seq = dseq.as<int32_t>();
        a.max_kv = max_kv;
        a.scores = global_scores ? scores.as<float>() : nullptr;
        a.scores_bytes = scores_tokens > 0 ? kc::attention_scores_bytes(scores_tokens, n_head, max_kv) : 0;
        a.kq = kq;
        a.softmax_v = sv;
        kc::attention(a, nullptr);
        return to_host<float>(dout, n() * ldo);
    }
};

TEST_F(CudaOps, AttentionMatchesCpu) {
    struct Case { int head_dim; GgmlType kv; };
    for (const Case c : {Case{16, GgmlType::kF32}, Case{64, GgmlType::kF16}, Case{80, GgmlType::kF32},
                         Case{128, GgmlType::kF16}}) {
        AttnSetup s;
        s.head_dim = c.head_dim;
        s.kv_type = c.kv;
        s.fill(111 + c.head_dim, 3.f, 3.f);
        const auto ref = s.cpu(pool);
        const auto shared = s.gpu(false);
        const auto global = s.gpu(true);
        const auto chunked = s.gpu(true, Accum::kF32, Accum::kF32, 2);  // launches of 2 tokens
        for (int64_t t = 0; t < s.n(); ++t) {
            const int64_t w = static_cast<int64_t>(s.n_head) * s.head_dim;
            EXPECT_LE(max_rel(&shared[t * s.ldo], &ref[t * s.ldo], w), 1e-5)
                << "head_dim " << c.head_dim << " " << ggml_type_name(c.kv) << " token " << t;
        }
        EXPECT_EQ(0, std::memcmp(shared.data(), global.data(), shared.size() * 4)) << "shared vs global scores";
        EXPECT_EQ(0, std::memcmp(shared.data(), chunked.data(), shared.size() * 4)) << "one launch vs chunks of 2 tokens";
    }
}

TEST_F(CudaOps, AttentionLongContextUsesOptInSharedMemory) {
    AttnSetup s;
    s.head_dim = 128;
    s.n_ctx = 20000;  // 80 KB of scores: above the default 48 KB per block
    s.n_seq = 1;
    s.pos = {19999, 12345};
    s.seq = {0, 0};
    s.fill(121);
    ASSERT_TRUE(kc::attention_scores_fit_shared(s.head_dim, 20000));
    const auto ref = s.cpu(pool);
    const auto got = s.gpu(false);
    EXPECT_LE(max_rel(got, ref), 1e-5);
}

TEST_F(CudaOps, AttentionF16AccumulationOverflowsOnLargeScores) {
    AttnSetup s;
    s.fill(131, 100.f, 100.f);  // |q·k| up to 16 * 1e4 = 1.6e5 > 65504
    for (int64_t t = 0; t < s.n(); ++t)  // one key per sequence certainly over the FP16 range
        for (int d = 0; d < s.head_dim; ++d) s.q[t * s.ldq + d] = 100.f;
    for (int r : {0, s.n_ctx}) {
        std::vector<float> big(s.kv_dim(), 100.f);
        kernels::store_row(s.kv_type, big.data(), s.kc_.data() + r * s.row_bytes(), s.kv_dim());
    }
    auto written_non_finite = [&](const std::vector<float>& out) {  // skips the poisoned row padding
        bool bad = false;
        for (int64_t t = 0; t < s.n(); ++t) bad |= kernels::has_non_finite(&out[t * s.ldo], int64_t{s.n_head} * s.head_dim);
        return bad;
    };
    EXPECT_FALSE(written_non_finite(s.gpu(false)));
    EXPECT_TRUE(written_non_finite(s.gpu(false, Accum::kF16, Accum::kF16)));
}

}  // namespace
}  // namespace pipelm::cudatest
