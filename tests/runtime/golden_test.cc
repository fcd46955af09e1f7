// Golden tests: `pipelm logits` / `pipelm run` against the reference outputs of
// tests/data/models (llama.cpp and transformers float64; see shared/testdata/README.md).
#include <gtest/gtest.h>

#include <cstring>

#include "tests/testing/json_util.h"

namespace pipelm::testing {
namespace {

struct Compare {
    double max_rel = 0;
    int argmax_agree = 0;
    int rows = 0;
    std::vector<double> per_row;
};

Compare compare(const std::vector<float>& x, const std::vector<float>& r, int V) {
    Compare c;
    EXPECT_EQ(x.size(), r.size());
    c.rows = static_cast<int>(std::min(x.size(), r.size()) / V);
    for (int i = 0; i < c.rows; ++i) {
        const double e = rel_l2(x.data() + i * V, r.data() + i * V, V);
        c.per_row.push_back(e);
        c.max_rel = std::max(c.max_rel, e);
        c.argmax_agree += argmax(x.data() + i * V, V) == argmax(r.data() + i * V, V);
    }
    return c;
}

std::vector<int32_t> prompt_ids(const std::string& model_dir, const std::string& name) {
    return json_ids(read_json(data_path("models/" + model_dir + "/ref/prompts.json")).at(name).at("ids"));
}

// glm4-tiny's F16, BF16 and Q8_0 files are not stored: `pipelm quantize` rebuilds them from the
// F32 file tensor-for-tensor identical to llama-quantize's (checked against the originals when
// the data was copied: all 796 tensors equal), and the exact-forward references below would
// catch any difference in the weights.
std::string derived_tiny(const std::string& type) {
    const std::string out = temp_file("glm4-tiny-" + type + ".gguf");
    if (read_text(out).empty()) {
        const RunResult r = run_cmd(pipelm_cmd("quantize -m " + data_path("models/glm4-tiny/model.gguf") + " -o " + out +
                                               " --type " + type));
        EXPECT_EQ(r.status, 0) << r.output;
    }
    return out;
}

std::vector<float> logits(const std::string& model_rel, const std::vector<int32_t>& ids, const std::string& extra = "") {
    std::string model = data_path(model_rel);
    for (const char* t : {"f16", "bf16", "q8_0"})
        if (model_rel == std::string("models/glm4-tiny/model-") + t + ".gguf") model = derived_tiny(t);
    const std::string out = temp_file("logits-" + std::to_string(std::hash<std::string>()(model_rel + extra + ids_arg(ids))) + ".f32");
    const RunResult r = run_cmd(pipelm_cmd("logits -m " + model + " --tokens " + ids_arg(ids) + " --out " + out + " " + extra));
    EXPECT_EQ(r.status, 0) << r.output;
    return read_f32(out);
}

const char* kPrompts[] = {"p1", "p7", "p64"};
constexpr int kTinyVocab = 666;

// F32 file vs transformers float64: llama.cpp reaches 2.2e-6 here. pipelm accumulates every dot
// product in FP32 (norm sums and softmax sums in double), so its error is FP32 rounding of the
// same order; 1e-5 leaves a 4x margin and still catches any real bug (a wrong op gives > 1e-2).
TEST(GoldenTiny, F32MatchesTransformersFloat64) {
    for (const char* p : kPrompts) {
        const auto ids = prompt_ids("glm4-tiny", p);
        const auto x = logits("models/glm4-tiny/model.gguf", ids);
        const auto r = read_f32(data_path(std::string("models/glm4-tiny/ref/logits-hf64-") + p + ".f32"));
        const Compare c = compare(x, r, kTinyVocab);
        EXPECT_LE(c.max_rel, 1e-5) << p;
        EXPECT_EQ(c.argmax_agree, c.rows) << p;
    }
}

// F16/BF16/Q8_0 files vs the F32 forward of exactly their stored weights.
// - `--act-quant none` (f32 activations): pipelm dequantizes bit-exactly and accumulates in FP32,
//   so it must be at least as close as llama.cpp's own logits (which round activations) and
//   within 1e-4 wherever llama.cpp is closer than that.
// - `--act-quant q8` (activations rounded to int8 per 32 values for Q8_0 weights, llama.cpp's own
//   scheme): the same kind of error as llama.cpp's logits. This tiny random model amplifies
//   rounding chaotically through its 61 layers, so the same scheme lands at 0.6-1.6x llama.cpp's
//   error per position (measured); the bound is 2x llama.cpp's largest error, and the argmax of
//   every position must agree with the exact forward. F16/BF16 have no integer kernel: q8 gives
//   exactly the f32-activation bits there.
// - the default (`--act-quant auto`) is q8: the same bytes.
TEST(GoldenTiny, ReducedPrecisionFilesMatchTheirExactForward) {
    for (const char* v : {"f16", "bf16", "q8_0"}) {
        for (const char* p : kPrompts) {
            const auto ids = prompt_ids("glm4-tiny", p);
            const std::string file = std::string("models/glm4-tiny/model-") + v + ".gguf";
            const auto x = logits(file, ids, "--act-quant none");
            const auto fast = logits(file, ids, "--act-quant q8");
            const auto dflt = logits(file, ids);
            ASSERT_EQ(dflt.size(), fast.size()) << v << " " << p;
            EXPECT_EQ(0, std::memcmp(dflt.data(), fast.data(), fast.size() * 4)) << v << " " << p << ": default vs q8";
            const auto exact = read_f32(data_path(std::string("models/glm4-tiny/ref/logits-exact-") + v + "-" + p + ".f32"));
            const auto llama = read_f32(data_path(std::string("models/glm4-tiny/ref/logits-") + v + "-" + p + ".f32"));
            const Compare ours = compare(x, exact, kTinyVocab);
            const Compare ours_fast = compare(fast, exact, kTinyVocab);
            const Compare theirs = compare(llama, exact, kTinyVocab);
            std::printf("%s %s: max rel L2 vs exact: f32 act %.2e, q8 act %.2e, llama.cpp %.2e\n", v, p, ours.max_rel,
                        ours_fast.max_rel, theirs.max_rel);
            for (int i = 0; i < ours.rows; ++i) {
                EXPECT_LE(ours.per_row[i], std::max(theirs.per_row[i], 0.0)) << v << " " << p << " row " << i;
                EXPECT_LE(ours.per_row[i], 1e-4) << v << " " << p << " row " << i;
            }
            EXPECT_LE(ours_fast.max_rel, 2 * theirs.max_rel) << v << " " << p << " q8 act";
            if (std::string(v) != "q8_0") {
                EXPECT_EQ(0, std::memcmp(x.data(), fast.data(), x.size() * 4)) << v << " " << p;
            }
        }
    }
}

// glm4-range: K·Q scores up to 4e5, so one FP32 ulp of a score is 0.03 and attention is nearly
// one-hot: FP32 implementations differ visibly from float64 (llama.cpp: 4e-3, argmax 0.995).
TEST(GoldenRange, F32WithinTheIllConditionedBound) {
    int agree = 0, rows = 0;
    for (const char* p : kPrompts) {
        const auto ids = prompt_ids("glm4-range", p);
        const auto x = logits("models/glm4-range/model.gguf", ids);
        const auto r = read_f32(data_path(std::string("models/glm4-range/ref/logits-hf64-") + p + ".f32"));
        const Compare c = compare(x, r, kTinyVocab);
        EXPECT_LE(c.max_rel, 1e-2) << p;
        agree += c.argmax_agree;
        rows += c.rows;
    }
    EXPECT_GE(static_cast<double>(agree) / rows, 0.99);
}

TEST(GoldenTiny, GreedyTokensEqualReference) {
    const auto g = read_json(data_path("models/glm4-tiny/ref/greedy-f32.json"));
    const auto prompt = json_ids(g.at("prompt_ids"));
    const auto want = json_ids(g.at("generated_ids"));
    const RunResult r = run_cmd(pipelm_cmd("run -m " + data_path("models/glm4-tiny/model.gguf") + " --tokens " +
                                           ids_arg(prompt) + " -n " + std::to_string(want.size()) +
                                           " --temp 0 --ignore-eos --print-ids"));
    ASSERT_EQ(r.status, 0) << r.output;
    // stdout holds the ids line; the summary line goes to stderr (merged here).
    const size_t at = r.output.find('[');
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_EQ(r.output.substr(at, r.output.find('\n', at) - at + 1), "[" + [&] {
        std::string s;
        for (size_t i = 0; i < want.size(); ++i) s += (i ? ", " : "") + std::to_string(want[i]);
        return s;
    }() + "]\n");
}

// Batch invariance: one batch, chunks of 7 and token by token give bit-identical logits.
TEST(Invariance, ChunkedEqualsBatchedEqualsTokenByToken) {
    const auto ids = prompt_ids("glm4-tiny", "p64");
    const auto full = logits("models/glm4-tiny/model.gguf", ids, "--ubatch 512");
    for (const char* ub : {"--ubatch 7", "--ubatch 1"}) {
        const auto x = logits("models/glm4-tiny/model.gguf", ids, ub);
        ASSERT_EQ(x.size(), full.size());
        EXPECT_EQ(0, std::memcmp(x.data(), full.data(), x.size() * 4)) << ub;
    }
    const auto threads = logits("models/glm4-tiny/model.gguf", ids, "--threads 2 --ubatch 5");
    EXPECT_EQ(0, std::memcmp(threads.data(), full.data(), full.size() * 4));
}

// Split invariance over in-process stages: byte-identical logits for every split.
TEST(Invariance, SplitsAreByteIdenticalInProcess) {
    const auto ids = prompt_ids("glm4-tiny", "p64");
    const auto one = logits("models/glm4-tiny/model.gguf", ids, "--ubatch 16");
    for (const char* split : {"--stages 1 --split 61", "--stages 2 --split 30,31", "--stages 2 --split 1,60",
                              "--stages 2 --split 60,1", "--stages 3 --split 20,20,21",
                              "--stages 4 --split 16,15,15,15", "--stages 3 --split auto"}) {
        const auto x = logits("models/glm4-tiny/model.gguf", ids, std::string("--ubatch 16 ") + split);
        ASSERT_EQ(x.size(), one.size()) << split;
        EXPECT_EQ(0, std::memcmp(x.data(), one.data(), x.size() * 4)) << split;
    }
}

// --wire bf16 halves the bytes on links; its effect on the logits is measured here and in the
// README (it rounds the residual stream at each stage boundary).
TEST(Invariance, Bf16WireStaysClose) {
    const auto ids = prompt_ids("glm4-tiny", "p64");
    const auto one = logits("models/glm4-tiny/model.gguf", ids);
    const auto x = logits("models/glm4-tiny/model.gguf", ids, "--stages 4 --wire bf16");
    const Compare c = compare(x, one, kTinyVocab);
    std::printf("bf16 wire, 4 stages: max rel L2 %.3e, argmax %d/%d\n", c.max_rel, c.argmax_agree, c.rows);
    EXPECT_LE(c.max_rel, 5e-2);
    EXPECT_GT(c.max_rel, 0.0);
}

}  // namespace
}  // namespace pipelm::testing

namespace pipelm::testing {
namespace {

// Every llama.cpp-quantized file (ten types, and the ffn-416 fallback mixes) against the F32
// forward of exactly its stored weights (llama.cpp's own logits: ≈2-4e-2 from it here).
// - `--act-quant none`: pipelm dequantizes bit-exactly and computes in FP32, so it must be
//   within 1e-4 and at least as close as llama.cpp.
// - `--act-quant q8` (int8 activations per 32 values, for every type here): the same kind of
//   error as llama.cpp (which rounds activations per 32 values for the legacy types and per 256
//   for the K-quants, Q8_K): measured 0.65-1.12x llama.cpp's largest error per file and prompt;
//   the bound is 1.5x; over all files, the argmax agrees with the exact forward about as often as
//   llama.cpp's does (these random models have flat logits, so neither always agrees).
// - the default (`--act-quant auto`): the q8 bytes.
TEST(GoldenQuant, EveryFileMatchesItsExactForward) {
    const char* models[][11] = {
        {"glm4-quant", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q4_k_m", "q5_k_m", "q6_k", "iq4_xs"},
        {"glm4-quant-ff416", "q4_k_m", "q5_k_m", "iq4_xs", nullptr}};
    int agree_fast = 0, agree_llama = 0;
    for (const auto& m : models) {
        for (int k = 1; k < 11 && m[k]; ++k) {
            for (const char* p : {"p1", "p7"}) {
                const std::string dir = std::string("models/") + m[0];
                const auto ids = prompt_ids(m[0], p);
                const auto x = logits(dir + "/model-" + m[k] + ".gguf", ids, "--act-quant none");
                const auto fast = logits(dir + "/model-" + m[k] + ".gguf", ids, "--act-quant q8");
                if (std::string(p) == "p7") {
                    const auto dflt = logits(dir + "/model-" + m[k] + ".gguf", ids, "--act-quant auto");
                    ASSERT_EQ(dflt.size(), fast.size()) << m[k];
                    EXPECT_EQ(0, std::memcmp(dflt.data(), fast.data(), fast.size() * 4)) << m[0] << " " << m[k] << ": auto vs q8";
                }
                const auto exact = read_f32(data_path(dir + "/ref/logits-exact-" + m[k] + "-" + p + ".f32"));
                const auto llama = read_f32(data_path(dir + "/ref/logits-" + m[k] + "-" + p + ".f32"));
                const Compare ours = compare(x, exact, kTinyVocab);
                const Compare ours_fast = compare(fast, exact, kTinyVocab);
                const Compare theirs = compare(llama, exact, kTinyVocab);
                std::printf("%s %s %s: max rel L2 vs exact: f32 act %.2e, q8 act %.2e, llama.cpp %.2e\n", m[0], m[k], p,
                            ours.max_rel, ours_fast.max_rel, theirs.max_rel);
                EXPECT_LE(ours.max_rel, 1e-4) << m[0] << " " << m[k] << " " << p;
                for (int i = 0; i < ours.rows; ++i) EXPECT_LE(ours.per_row[i], theirs.per_row[i]) << m[k] << " row " << i;
                EXPECT_LE(ours_fast.max_rel, 1.5 * theirs.max_rel) << m[0] << " " << m[k] << " " << p << " q8 act";
                EXPECT_EQ(ours.argmax_agree, ours.rows) << m[0] << " " << m[k] << " " << p;
                agree_fast += ours_fast.argmax_agree;
                agree_llama += theirs.argmax_agree;
            }
        }
    }
    std::printf("argmax = exact forward: q8 act %d, llama.cpp %d\n", agree_fast, agree_llama);
    EXPECT_GE(agree_fast, agree_llama - 2);
}

// Batch and split invariance hold with int8 activations too (each token's row is quantized on
// its own): Q8_0 tiny file, --act-quant q8.
TEST(Invariance, Q8ActivationsChunkedSplitAndThreadInvariant) {
    const auto ids = prompt_ids("glm4-tiny", "p64");
    const std::string file = "models/glm4-tiny/model-q8_0.gguf";
    const auto full = logits(file, ids, "--act-quant q8 --ubatch 512");
    for (const char* extra : {"--ubatch 7", "--ubatch 1", "--threads 2 --ubatch 5", "--stages 3 --split 20,20,21 --ubatch 16",
                              "--stages 2 --split 60,1 --ubatch 3"}) {
        const auto x = logits(file, ids, std::string("--act-quant q8 ") + extra);
        ASSERT_EQ(x.size(), full.size()) << extra;
        EXPECT_EQ(0, std::memcmp(x.data(), full.data(), x.size() * 4)) << extra;
    }
}

}  // namespace
}  // namespace pipelm::testing

namespace pipelm::testing {
namespace {

// KV cache types (llama.cpp's --cache-type-k/-v): F16 and Q8_0 storage of K and V change the
// logits by their rounding only (F16: ~1e-3 relative, measured 1e-4 on glm4-tiny).
TEST(KvCache, F16AndQ8CachesStayClose) {
    const auto ids = prompt_ids("glm4-tiny", "p64");
    const auto f32 = logits("models/glm4-tiny/model.gguf", ids);
    const auto f16 = logits("models/glm4-tiny/model.gguf", ids, "-ctk f16 -ctv f16");
    const Compare c = compare(f16, f32, kTinyVocab);
    EXPECT_LE(c.max_rel, 5e-3);
    EXPECT_GT(c.max_rel, 0.0);
    // glm4-tiny's head_dim 16 cannot hold Q8_0 blocks of 32: refused with the reason.
    const RunResult r = run_cmd(pipelm_cmd("logits -m " + data_path("models/glm4-tiny/model.gguf") +
                                           " --tokens 1,2 --out " + temp_file("q8kv.f32") + " -ctk q8_0 -ctv q8_0"));
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.output.find("multiple of 32"), std::string::npos) << r.output;
    // glm4-demo (head_dim 64): Q8_0 cache, logits of the first 32 validation tokens.
    const std::string demo = std::string(PIPELM_SOURCE_DIR) + "/launcher/assets/glm4-demo-f16.gguf";
    const auto v32 = json_ids(read_json(data_path("models/glm4-demo/ref/prompts.json")).at("v32").at("ids"));
    auto run = [&](const std::string& extra) {
        const std::string out = temp_file("demo" + std::to_string(extra.size()) + ".f32");
        const RunResult rr = run_cmd(pipelm_cmd("logits -m " + demo + " --tokens " + ids_arg(v32) + " --out " + out + " " + extra));
        EXPECT_EQ(rr.status, 0) << rr.output;
        return read_f32(out);
    };
    const auto base = run("");
    const auto q8 = run("-ctk q8_0 -ctv q8_0");
    const Compare cq = compare(q8, base, 4096);
    EXPECT_LE(cq.max_rel, 2e-2);
    EXPECT_GE(cq.argmax_agree, cq.rows - 1);
    // And the F16 demo file against llama.cpp's F32 run of the F32 source (weights rounded to F16
    // only): llama.cpp's own F16 run is within 1e-3 of it.
    const auto ref = read_f32(data_path("models/glm4-demo/ref/logits-f32-v32.f32"));
    const Compare cr = compare(base, ref, 4096);
    EXPECT_LE(cr.max_rel, 5e-3);
    EXPECT_EQ(cr.argmax_agree, cr.rows);
}

}  // namespace
}  // namespace pipelm::testing
