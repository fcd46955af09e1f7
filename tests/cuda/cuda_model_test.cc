// CUDA stages (model::make_stage with device "cuda:0") on whole models: glm4-tiny logits vs
// transformers float64 and vs the exact forward of the f16/bf16/q8_0 files, the
// llama.cpp-quantized glm4-quant files (every block type) vs their exact forward and the CPU
// stage, 1-4 stages chained by hand on one GPU, decode vs prefill, the CPU stage (with a bound
// derived from the CPU's own sensitivity to FP32-level noise), glm4-range with the default and
// the FP16 attention policy, error paths, and the `pipelm logits --devices cuda:0` command line.
// Measured errors are printed and recorded as test properties (--gtest_output=json), which
// scripts/device-check.sh collects.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/thread_pool.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/stage.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/testing/json_util.h"

namespace pipelm::cudatest {
namespace {

using model::Batch;
using model::Glm4Config;
using model::StageOptions;
using model::StageSpec;
using pipelm::testing::data_path;

constexpr int kVocab = 666;
const char* kPrompts[] = {"p1", "p7", "p64"};

struct Model {
    std::shared_ptr<const gguf::GgufFile> file;
    Glm4Config cfg;
};

Model open_path(const std::string& path) {
    Model m;
    m.file = gguf::GgufFile::open(path);
    m.cfg = Glm4Config::from_gguf(*m.file);
    return m;
}
Model open_model(const std::string& rel) { return open_path(data_path(rel)); }

// glm4-tiny in f16 / bf16 / q8_0: the stored file when there is one, else rebuilt from the F32
// file by `pipelm quantize` (tensor-for-tensor llama-quantize's, as the golden tests do).
Model open_tiny(const std::string& type) {
    const std::string stored = data_path("models/glm4-tiny/model-" + type + ".gguf");
    if (std::FILE* f = std::fopen(stored.c_str(), "rb")) {
        std::fclose(f);
        return open_path(stored);
    }
    const std::string out = pipelm::testing::temp_file("glm4-tiny-" + type + ".gguf");
    if (pipelm::testing::read_text(out).empty()) {
        const auto r = pipelm::testing::run_cmd(pipelm::testing::pipelm_cmd(
            "quantize -m " + data_path("models/glm4-tiny/model.gguf") + " -o " + out + " --type " + type));
        EXPECT_EQ(r.status, 0) << r.output;
    }
    return open_path(out);
}

std::vector<int32_t> prompt(const std::string& dir, const std::string& name) {
    return pipelm::testing::json_ids(
        pipelm::testing::read_json(data_path("models/" + dir + "/ref/prompts.json")).at(name).at("ids"));
}

StageOptions cuda_options(int n_ctx = 256) {
    StageOptions o;
    o.n_ctx = n_ctx;
    o.device = "cuda:0";
    return o;
}
StageOptions cpu_options(StageOptions o = cuda_options()) {
    o.device = "cpu";
    return o;
}

// The pool of the CPU stages (make_stage keeps a reference: it outlives every stage).
ThreadPool& test_pool() {
    static ThreadPool pool(2);
    return pool;
}

// Stages over `splits` (layer counts, summing to n_layer) on o.device.
std::vector<std::unique_ptr<model::Stage>> make_stages(const Model& m, const std::vector<int>& splits,
                                                       const StageOptions& o) {
    std::vector<std::unique_ptr<model::Stage>> st;
    int first = 0;
    for (size_t i = 0; i < splits.size(); ++i) {
        StageSpec s{static_cast<int>(i), first, first + splits[i], i == 0, i + 1 == splits.size()};
        st.push_back(model::make_stage(m.file, m.cfg, s, o, test_pool()));
        first += splits[i];
    }
    return st;
}

// Logits of every position of `ids`, processed in chunks of `ubatch` tokens through the stages;
// after_stage(i, x, n), when given, may change the activations between stage i and the next.
using StageHook = std::function<void(size_t, float*, int64_t)>;
std::vector<float> logits(std::vector<std::unique_ptr<model::Stage>>& st, const std::vector<int32_t>& ids,
                          int64_t ubatch = 1 << 30, int32_t slot = 0, const StageHook& after_stage = {}) {
    const int64_t E = st.front()->n_embd(), V = st.back()->config().n_vocab;
    std::vector<float> out(ids.size() * V);
    for (int64_t at = 0; at < static_cast<int64_t>(ids.size()); at += ubatch) {
        const int64_t n = std::min<int64_t>(ubatch, static_cast<int64_t>(ids.size()) - at);
        std::vector<float> x(n * E);
        std::vector<int32_t> pos(n), seq(n, slot);
        std::iota(pos.begin(), pos.end(), static_cast<int32_t>(at));
        st.front()->embed(ids.data() + at, n, x.data());
        Batch b{n, pos.data(), seq.data()};
        for (size_t i = 0; i < st.size(); ++i) {
            st[i]->forward(x.data(), b);
            if (after_stage) after_stage(i, x.data(), n * E);
        }
        st.back()->head(x.data(), n, out.data() + at * V);
    }
    return out;
}

std::vector<float> logits(const Model& m, const std::vector<int>& splits, const std::vector<int32_t>& ids,
                          const StageOptions& o = cuda_options(), int64_t ubatch = 1 << 30) {
    auto st = make_stages(m, splits, o);
    return logits(st, ids, ubatch);
}

// Per-row relative L2 errors of [rows][V] logits.
std::vector<double> row_errors(const std::vector<float>& x, const std::vector<float>& r, int V = kVocab) {
    EXPECT_EQ(x.size(), r.size());
    std::vector<double> e;
    for (size_t i = 0; i + V <= std::min(x.size(), r.size()); i += V) e.push_back(row_rel_l2(&x[i], &r[i], V));
    return e;
}
double max_of(const std::vector<double>& v) { return v.empty() ? INFINITY : *std::max_element(v.begin(), v.end()); }

int argmax_agree(const std::vector<float>& x, const std::vector<float>& r, int V = kVocab) {
    int agree = 0;
    for (size_t i = 0; i + V <= std::min(x.size(), r.size()); i += V)
        agree += pipelm::testing::argmax(&x[i], V) == pipelm::testing::argmax(&r[i], V);
    return agree;
}

std::vector<float> ref(const std::string& dir, const std::string& name) {
    return pipelm::testing::read_f32(data_path("models/" + dir + "/ref/" + name));
}

// Prints a measured error and records it as a test property (in --gtest_output=json), whatever
// the outcome: scripts/device-check.sh lists them per model.
void report(const std::string& what, double max_rel_l2) {
    std::printf("%s: max rel L2 %.3e\n", what.c_str(), max_rel_l2);
    std::string key = "max_rel_l2 " + what;
    for (char& ch : key)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '.') ch = '_';
    char v[32];
    std::snprintf(v, sizeof v, "%.3e", max_rel_l2);
    ::testing::Test::RecordProperty(key, v);
}

class CudaModel : public ::testing::Test {
protected:
    void SetUp() override { PIPELM_REQUIRE_CUDA(); }
};

// F32 file vs transformers float64: the CPU stage reaches ~2e-6; 1e-4 is the CUDA budget.
TEST_F(CudaModel, TinyF32MatchesTransformersFloat64) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    for (const char* p : kPrompts) {
        const auto x = logits(m, {m.cfg.n_layer}, prompt("glm4-tiny", p));
        const auto r = ref("glm4-tiny", std::string("logits-hf64-") + p + ".f32");
        const auto e = row_errors(x, r);
        for (size_t i = 0; i < e.size(); ++i) EXPECT_LE(e[i], 1e-4) << p << " row " << i;
        EXPECT_EQ(argmax_agree(x, r), static_cast<int>(e.size())) << p;
        report(std::string("glm4-tiny f32 ") + p + " vs hf64", max_of(e));
    }
}

// F16/BF16/Q8_0 files vs the F32 forward of exactly their stored weights (llama.cpp's own
// activation rounding is 2e-3 / 2.5e-2 / 8e-2 here; the CUDA backend keeps activations exact).
TEST_F(CudaModel, ReducedPrecisionFilesMatchTheirExactForward) {
    for (const char* v : {"f16", "bf16", "q8_0"}) {
        const Model m = open_tiny(v);
        for (const char* p : kPrompts) {
            const auto x = logits(m, {m.cfg.n_layer}, prompt("glm4-tiny", p));
            const auto r = ref("glm4-tiny", std::string("logits-exact-") + v + "-" + p + ".f32");
            const auto e = row_errors(x, r);
            for (size_t i = 0; i < e.size(); ++i) EXPECT_LE(e[i], 1e-3) << v << " " << p << " row " << i;
            report(std::string("glm4-tiny ") + v + " " + p + " vs exact", max_of(e));
        }
    }
}

// Every llama.cpp-quantized file (ten types; the ffn-416 files mix in the fallback types), its
// weights kept quantized on the device: p1 / p7 (the GEMV path, weights decoded in registers) vs
// the F32 forward of exactly the stored weights (the CPU stage reaches <= 7.3e-7 there), and p64
// in one batch (dequantized row chunks + FP32 SGEMM) and token by token vs the CPU stage. The
// budget is that of the F32 file vs float64 (1e-4): both sides are FP32 over the same exact
// weights, only the order of the additions differs.
TEST_F(CudaModel, QuantizedFilesMatchTheirExactForward) {
    const char* files[][2] = {{"glm4-quant", "q8_0"},         {"glm4-quant", "q4_0"},
                              {"glm4-quant", "q4_1"},         {"glm4-quant", "q5_0"},
                              {"glm4-quant", "q5_1"},         {"glm4-quant", "iq4_nl"},
                              {"glm4-quant", "q4_k_m"},       {"glm4-quant", "q5_k_m"},
                              {"glm4-quant", "q6_k"},         {"glm4-quant", "iq4_xs"},
                              {"glm4-quant-ff416", "q4_k_m"}, {"glm4-quant-ff416", "q5_k_m"},
                              {"glm4-quant-ff416", "iq4_xs"}};
    for (const auto& f : files) {
        const std::string dir = f[0], type = f[1], what = dir + " " + type;
        const Model m = open_model("models/" + dir + "/model-" + type + ".gguf");
        const int V = m.cfg.n_vocab, L = m.cfg.n_layer;
        for (const char* p : {"p1", "p7"}) {
            const auto x = logits(m, {L}, prompt(dir, p));
            const auto r = ref(dir, "logits-exact-" + type + "-" + p + ".f32");
            const double e = max_of(row_errors(x, r, V));
            EXPECT_LE(e, 1e-4) << what << " " << p;
            report(what + " " + p + " vs exact", e);
        }
        const auto ids = prompt(dir, "p64");
        const auto c = logits(m, {L}, ids, cpu_options());
        const auto batch = logits(m, {L}, ids);
        const auto single = logits(m, {L}, ids, cuda_options(), 1);
        const double eb = max_of(row_errors(batch, c, V)), es = max_of(row_errors(single, c, V));
        EXPECT_LE(eb, 1e-4) << what << " p64 batch vs cpu";
        EXPECT_LE(es, 1e-4) << what << " p64 token by token vs cpu";
        report(what + " p64 batch vs cpu", eb);
        report(what + " p64 token by token vs cpu", es);
    }
}

// 1, 2, 3 and 4 stages on one GPU, chained by hand: within 1e-6 relative.
TEST_F(CudaModel, StageSplitsAgree) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    const auto ids = prompt("glm4-tiny", "p64");
    const auto one = logits(m, {61}, ids, cuda_options(), 16);
    const std::vector<std::vector<int>> splits = {{30, 31}, {1, 60}, {60, 1}, {20, 20, 21}, {16, 15, 15, 15}};
    for (const std::vector<int>& split : splits) {
        const auto x = logits(m, split, ids, cuda_options(), 16);
        EXPECT_LE(max_of(row_errors(x, one)), 1e-6) << split.size() << " stages, first " << split[0];
    }
}

// Token by token (GEMV path, growing KV cache) vs one batch (cuBLAS path) vs chunks of 5. Every
// path multiplies the exact stored weights and the exact F32 activations with FP32 accumulation
// (f16 / bf16 prefill too: dequantized row chunks + FP32 GEMM): they agree to FP32 rounding.
TEST_F(CudaModel, DecodeMatchesPrefill) {
    for (const char* v : {"f32", "bf16", "f16", "q8_0"}) {
        const Model m = std::string(v) == "f32" ? open_model("models/glm4-tiny/model.gguf") : open_tiny(v);
        const auto ids = prompt("glm4-tiny", "p64");
        const auto batch = logits(m, {61}, ids);
        const auto single = logits(m, {61}, ids, cuda_options(), 1);
        const auto chunks = logits(m, {61}, ids, cuda_options(), 5);
        EXPECT_LE(max_of(row_errors(single, batch)), 2e-5) << v;
        EXPECT_LE(max_of(row_errors(chunks, batch)), 2e-5) << v;
    }
}

// ---- the bound of MatchesTheCpuStage, derived on the CPU ----------------------------------------
// The CUDA and the CPU stage compute every layer in FP32 over the same exact weights but add in
// different orders (cuBLAS's tiles vs the CPU's 8 lanes, the K·Q dot products, the softmax sum):
// a layer's outputs differ by a few FP32 ulps, and the following layers carry that along. An f16
// KV cache amplifies it: a K or V value within those few ulps of an f16 rounding boundary rounds
// to the other f16 neighbour on one side, a relative jump of up to 2^-11 (4.9e-4) in that
// element instead of ~2^-23 (one f16 ulp against one f32 ulp: 4096 times more). How much the
// 61 layers of glm4-tiny amplify such noise is a property of the model and the cache type,
// measured on the CPU alone:
//   - the CPU forward runs as 61 one-layer stages (bit-identical to one stage: split invariance),
//     once as is and, for two seeds, with every activation multiplied by (1 + ε u) after every
//     layer, u uniform in [-1, 1], ε = kNoise = 2^-20 (up to 16 ulps per element and layer; the
//     GPU's per-layer differences are checked to stay below ε: LayerDifferencesAreFp32Level);
//   - bound = kSafety (4) x the largest relative L2 logits difference of the perturbed runs.
// Measured when this was written (CudaModelBound.CpuAmplificationOfFp32Noise prints it): f32
// cache 8.8e-6 -> bound 3.5e-5; f16 cache 4.3e-4 -> bound 1.7e-3. The f16 amplification
// saturates: noise of one ulp (ε = 2^-24) already gives 1.8e-4 (the GPU's difference seen when
// the bound was a guessed 2e-5), 4 ulps 2.0e-4; the flips, not the noise level, dominate.
constexpr double kNoise = 1.0 / (1 << 20);
constexpr double kSafety = 4;

double cpu_noise_bound(const Model& m, const std::vector<int32_t>& ids, GgmlType cache) {
    StageOptions o = cpu_options();
    o.cache_type_k = o.cache_type_v = cache;
    auto run = [&](double eps, uint32_t seed) {
        auto st = make_stages(m, std::vector<int>(static_cast<size_t>(m.cfg.n_layer), 1), o);
        std::mt19937 rng(seed);
        std::uniform_real_distribution<float> u(-1.f, 1.f);
        return logits(st, ids, 1 << 30, 0, [&](size_t, float* x, int64_t n) {
            if (eps > 0)
                for (int64_t i = 0; i < n; ++i) x[i] *= 1.f + static_cast<float>(eps) * u(rng);
        });
    };
    const auto base = run(0, 0);
    double worst = 0;
    for (uint32_t seed : {1u, 2u}) worst = std::max(worst, max_of(row_errors(run(kNoise, seed), base)));
    return kSafety * worst;
}

// Runs without a GPU: the derived bounds, printed and recorded.
TEST(CudaModelBound, CpuAmplificationOfFp32Noise) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    const auto ids = prompt("glm4-tiny", "p64");
    for (GgmlType cache : {GgmlType::kF32, GgmlType::kF16}) {
        const double b = cpu_noise_bound(m, ids, cache);
        report(std::string("glm4-tiny p64 cpu noise bound, cache ") + ggml_type_name(cache), b);
        EXPECT_GT(b, 0.0);
        EXPECT_LT(b, 1e-2) << "61 layers should not amplify FP32-level noise this much";
    }
}

// The premise of the bound: from the same input, each layer's CUDA output differs from the CPU's
// (relative L2 per token) by less than the amplitude ε of the noise the CPU runs are given (its
// rms is ε / sqrt(3); kSafety covers the difference). F32 cache: the arithmetic alone.
TEST_F(CudaModel, LayerDifferencesAreFp32Level) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    const auto ids = prompt("glm4-tiny", "p64");
    const std::vector<int> ones(static_cast<size_t>(m.cfg.n_layer), 1);
    auto cpu = make_stages(m, ones, cpu_options());
    auto gpu = make_stages(m, ones, cuda_options());
    const int64_t n = static_cast<int64_t>(ids.size()), E = m.cfg.n_embd;
    std::vector<float> x(n * E);
    cpu.front()->embed(ids.data(), n, x.data());
    std::vector<int32_t> pos(n), seq(n, 0);
    std::iota(pos.begin(), pos.end(), 0);
    const Batch b{n, pos.data(), seq.data()};
    double worst = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
        std::vector<float> g = x;
        cpu[i]->forward(x.data(), b);
        gpu[i]->forward(g.data(), b);
        for (int64_t t = 0; t < n; ++t) {
            const double d = row_rel_l2(&g[t * E], &x[t * E], E);
            worst = std::max(worst, d);
            EXPECT_LE(d, kNoise) << "layer " << i << " token " << t;
        }
    }
    report("glm4-tiny p64 per-layer cuda vs cpu", worst);
}

TEST_F(CudaModel, MatchesTheCpuStage) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    const auto ids = prompt("glm4-tiny", "p64");
    for (GgmlType cache : {GgmlType::kF32, GgmlType::kF16}) {
        StageOptions o = cuda_options();
        o.cache_type_k = o.cache_type_v = cache;
        const auto gpu = logits(m, {61}, ids, o);
        const auto c = logits(m, {61}, ids, cpu_options(o));
        const double e = max_of(row_errors(gpu, c)), bound = cpu_noise_bound(m, ids, cache);
        const std::string what = std::string("glm4-tiny p64 cuda vs cpu, cache ") + ggml_type_name(cache);
        report(what, e);
        report(what + " bound", bound);
        EXPECT_LE(e, bound) << what;
    }
}

// Two sequences interleaved in one batch (slots 0 and 1) give each sequence's own logits.
TEST_F(CudaModel, SequenceSlotsAreIndependent) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    const auto a = prompt("glm4-tiny", "p7");
    std::vector<int32_t> b(a.rbegin(), a.rend());
    StageOptions o = cuda_options();
    o.n_seq = 2;
    auto st = make_stages(m, {61}, o);
    const int64_t E = m.cfg.n_embd, n = static_cast<int64_t>(a.size());
    std::vector<int32_t> ids, pos, seq;
    for (int64_t i = 0; i < n; ++i) {
        ids.push_back(a[i]), pos.push_back(static_cast<int32_t>(i)), seq.push_back(0);
        ids.push_back(b[i]), pos.push_back(static_cast<int32_t>(i)), seq.push_back(1);
    }
    std::vector<float> x(ids.size() * E), lg(ids.size() * kVocab);
    st[0]->embed(ids.data(), static_cast<int64_t>(ids.size()), x.data());
    st[0]->forward(x.data(), Batch{static_cast<int64_t>(ids.size()), pos.data(), seq.data()});
    st[0]->head(x.data(), static_cast<int64_t>(ids.size()), lg.data());
    const auto la = logits(m, {61}, a), lb = logits(m, {61}, b);
    for (int64_t i = 0; i < n; ++i) {
        EXPECT_LE(row_rel_l2(&lg[(2 * i) * kVocab], &la[i * kVocab], kVocab), 2e-5) << "slot 0 row " << i;
        EXPECT_LE(row_rel_l2(&lg[(2 * i + 1) * kVocab], &lb[i * kVocab], kVocab), 2e-5) << "slot 1 row " << i;
    }
}

// glm4-range: raw K·Q up to 4.2e5. FP32 attention stays within the ill-conditioned bound of
// the golden test; FP16 K·Q overflows and the layer check reports it.
TEST_F(CudaModel, RangeModelPassesWithF32AndFailsLoudlyWithF16) {
    const Model m = open_model("models/glm4-range/model.gguf");
    int agree = 0, rows = 0;
    for (const char* p : kPrompts) {
        const auto x = logits(m, {61}, prompt("glm4-range", p));
        const auto r = ref("glm4-range", std::string("logits-hf64-") + p + ".f32");
        EXPECT_LE(max_of(row_errors(x, r)), 1e-2) << p;
        agree += argmax_agree(x, r);
        rows += static_cast<int>(r.size() / kVocab);
    }
    EXPECT_GE(static_cast<double>(agree) / rows, 0.99);

    StageOptions o = cuda_options();
    o.precision.kq = o.precision.softmax_v = model::Precision::kF16;
    try {
        logits(m, {61}, prompt("glm4-range", "p64"), o);
        FAIL() << "FP16 attention on glm4-range did not raise kNumerics";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kNumerics) << e.what();
        EXPECT_NE(std::string(e.what()).find("stage 0, layer "), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("K·Q overflowed FP16"), std::string::npos) << e.what();
    }
}

TEST_F(CudaModel, OutOfMemoryNamesDeviceBytesAndFix) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    StageOptions o = cuda_options(1 << 26);  // a KV cache of ~1 TB
    try {
        auto s = model::make_stage(m.file, m.cfg, StageSpec{0, 0, 61, true, true}, o, test_pool());
        FAIL() << "no out-of-memory error";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory) << e.what();
        const std::string w = e.what();
        EXPECT_NE(w.find("cuda:0"), std::string::npos) << w;
        EXPECT_NE(w.find("bytes"), std::string::npos) << w;
        EXPECT_NE(w.find("--ctx"), std::string::npos) << w;
        EXPECT_NE(w.find("stages"), std::string::npos) << w;
    }
}

TEST_F(CudaModel, MakeStageBuildsACudaStage) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    auto st = model::make_stage(m.file, m.cfg, StageSpec{0, 0, 61, true, true}, cuda_options(), test_pool());
    EXPECT_EQ(st->device(), "cuda:0");
    EXPECT_GT(st->weight_bytes(), 0u);
    EXPECT_EQ(st->kv_bytes(), 2ull * 61 * 256 * m.cfg.kv_dim() * 4);
}

// Runs with or without a GPU: a missing device is Error{kNoDevice} "no CUDA device cuda:N: ..." (exit 9).
TEST(CudaErrors, MissingDeviceIsReported) {
    const Model m = open_model("models/glm4-tiny/model.gguf");
    StageOptions o = cuda_options();
    o.device = "cuda:99";
    try {
        auto s = model::make_stage(m.file, m.cfg, StageSpec{0, 0, 61, true, true}, o, test_pool());
        FAIL() << "cuda:99 exists?";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kNoDevice) << e.what();
        EXPECT_NE(std::string(e.what()).find("no CUDA device cuda:99: "), std::string::npos) << e.what();
    }
}

// The command line: `pipelm logits --devices cuda:0` (1 and 2 stages) vs hf64, and the FP16
// attention demonstration on glm4-range failing with the layer named.
TEST_F(CudaModel, CommandLineLogitsOnCuda) {
    using pipelm::testing::ids_arg;
    using pipelm::testing::pipelm_cmd;
    using pipelm::testing::run_cmd;
    using pipelm::testing::temp_file;
    const auto ids = prompt("glm4-tiny", "p64");
    const auto r = ref("glm4-tiny", "logits-hf64-p64.f32");
    for (const char* dev : {"--devices cuda:0", "--devices cuda:0,cuda:0 --ubatch 16"}) {
        const std::string out = temp_file(std::string("cuda-logits-") + std::to_string(std::strlen(dev)) + ".f32");
        const auto res = run_cmd(pipelm_cmd("logits -m " + data_path("models/glm4-tiny/model.gguf") + " --tokens " +
                                            ids_arg(ids) + " --out " + out + " " + dev));
        ASSERT_EQ(res.status, 0) << res.output;
        const auto x = pipelm::testing::read_f32(out);
        EXPECT_LE(max_of(row_errors(x, r)), 1e-4) << dev;
    }
    const auto bad = run_cmd(pipelm_cmd("logits -m " + data_path("models/glm4-range/model.gguf") + " --tokens " +
                                        ids_arg(prompt("glm4-range", "p64")) + " --out " + temp_file("range-f16.f32") +
                                        " --devices cuda:0 --attn-precision f16"));
    EXPECT_NE(bad.status, 0) << bad.output;
    EXPECT_NE(bad.output.find("K·Q overflowed FP16"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace pipelm::cudatest
