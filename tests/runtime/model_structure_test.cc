// The structure the model code promises (issue "One GLM-4 definition for every device"): the
// weight table is the only place a tensor name is written and it describes every file exactly;
// one stage definition runs on every device; a CPU-only process of a CUDA build loads no CUDA
// library.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/thread_pool.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/mkmodel.h"
#include "runtime/model/stage.h"
#include "runtime/model/tensors.h"
#include "runtime/pipeline/planner.h"

namespace pipelm {
namespace {

using model::TensorId;

const std::string kTiny = std::string(PIPELM_TEST_DATA) + "/models/glm4-tiny/model.gguf";

std::vector<std::string> table_names(const model::Glm4Config& c) {
    std::vector<std::string> v;
    model::for_each_tensor(c, c.n_layer, [&](TensorId id, int layer) { v.push_back(model::tensor_name(id, layer)); });
    return v;
}

TEST(WeightTable, NamesAreUniqueAndFollowTheGgufScheme) {
    std::set<std::string> seen;
    for (const model::TensorDef& d : model::glm4_tensors()) {
        const std::string n = model::tensor_name(d.id, 7);
        EXPECT_TRUE(seen.insert(n).second) << n;
        EXPECT_EQ(n.rfind("blk.7.", 0) == 0, d.per_layer) << n;
        EXPECT_EQ(&model::tensor_def(d.id), &d);
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(TensorId::kCount));
    EXPECT_EQ(model::tensor_name(TensorId::kFfnDown, 3), "blk.3.ffn_down.weight");
    EXPECT_EQ(model::tensor_name(TensorId::kAttnQBias, 0), "blk.0.attn_q.bias");
    EXPECT_EQ(model::tensor_name(TensorId::kOutput), "output.weight");
}

// The table describes the test file completely: the same tensor set, and each shape is the one
// Glm4Config::from_gguf checked.
TEST(WeightTable, DescribesTheTinyFileExactly) {
    auto f = gguf::GgufFile::open(kTiny);
    const model::Glm4Config c = model::Glm4Config::from_gguf(*f);
    std::set<std::string> in_file, in_table;
    for (const auto& t : f->tensors()) in_file.insert(t.name);
    for (const auto& n : table_names(c)) in_table.insert(n);
    EXPECT_EQ(in_file, in_table);
    model::for_each_tensor(c, c.n_layer, [&](TensorId id, int layer) {
        EXPECT_EQ(f->tensor(model::tensor_name(id, layer)).ne, model::tensor_shape(id, c)) << model::tensor_name(id, layer);
    });
}

// mkmodel writes the table's tensors in the table's order, with its shapes (with and without
// q/k/v biases), and the planner's byte counts are the sums over the table.
TEST(WeightTable, MkmodelAndPlannerFollowTheTable) {
    const std::string dir = ::testing::TempDir() + "/weight_table_test";
    std::filesystem::create_directories(dir);
    for (bool bias : {false, true}) {
        model::MkModelSpec s;
        s.n_layer = 3;
        s.n_embd = 64;
        s.n_head = 4;
        s.n_head_kv = 2;
        s.head_dim = 16;
        s.n_rot = 8;
        s.n_ff = 96;
        s.n_vocab = 300;
        s.qkv_bias = bias;
        const std::string path = dir + (bias ? "/bias.gguf" : "/plain.gguf");
        model::mkmodel_write(s, path, 1);
        auto f = gguf::GgufFile::open(path);
        const model::Glm4Config c = model::Glm4Config::from_gguf(*f);
        EXPECT_EQ(c.qkv_bias, bias);
        std::vector<std::string> in_file;
        for (const auto& t : f->tensors()) in_file.push_back(t.name);
        EXPECT_EQ(in_file, table_names(c));
        const pipeline::ModelCosts costs = pipeline::ModelCosts::from_gguf(*f, c);
        ASSERT_EQ(costs.layer_bytes.size(), 3u);
        for (int l = 0; l < 3; ++l) {
            uint64_t sum = 0;
            for (const auto& t : f->tensors())
                if (t.name.rfind("blk." + std::to_string(l) + ".", 0) == 0) sum += t.bytes;
            EXPECT_EQ(costs.layer_bytes[l], sum) << "layer " << l;
        }
        EXPECT_EQ(costs.embedding_bytes, f->tensor("token_embd.weight").bytes);
        EXPECT_EQ(costs.head_bytes, f->tensor("output_norm.weight").bytes + f->tensor("output.weight").bytes);
    }
}

// No GGUF tensor name of GLM-4 is spelled anywhere in runtime/ or launcher/ but the table: a
// string literal that is a table name ("attn_q", "ffn_down.weight", "blk.3.attn_v.weight", ...)
// outside runtime/model/tensors.cc fails this test.
TEST(WeightTable, TensorNamesAreWrittenOnlyInTheTable) {
    std::string alt;
    for (const model::TensorDef& d : model::glm4_tensors()) alt += std::string(alt.empty() ? "" : "|") + d.name;
    const std::regex literal("\"((blk\\.[^\"]*)|((" + alt + ")(\\.(weight|bias))?))\"");
    int files = 0;
    for (const char* sub : {"runtime", "launcher"})
        for (const auto& e : std::filesystem::recursive_directory_iterator(std::string(PIPELM_SOURCE_DIR) + "/" + sub)) {
            const std::string p = e.path().string();
            if (!e.is_regular_file() || (e.path().extension() != ".cc" && e.path().extension() != ".h")) continue;
            const std::string table = "runtime/model/tensors.cc";
            if (p.size() >= table.size() && p.compare(p.size() - table.size(), table.size(), table) == 0) continue;
            ++files;
            std::ifstream in(p);
            std::string line;
            for (int n = 1; std::getline(in, line); ++n) {
                const size_t c = line.find("//");
                const std::string code = c == std::string::npos ? line : line.substr(0, c);
                std::smatch m;
                EXPECT_FALSE(std::regex_search(code, m, literal)) << p << ":" << n << " spells " << m.str(0)
                                                                  << ": use model::tensor_name(TensorId::...)";
            }
        }
    EXPECT_GT(files, 40);
}

// One stage definition: make_stage gives a stage that names its device; a CUDA device without a
// usable GPU is refused with an error that names the device and the fix (a CUDA build: the
// module loads and finds no device or no driver; a build without CUDA: no module).
TEST(StageFactory, OneDefinitionEveryDevice) {
    auto f = gguf::GgufFile::open(kTiny);
    const model::Glm4Config c = model::Glm4Config::from_gguf(*f);
    ThreadPool pool(1);
    model::StageOptions o;
    o.n_ctx = 16;
    auto st = model::make_stage(f, c, model::StageSpec{0, 0, c.n_layer, true, true}, o, pool);
    EXPECT_EQ(st->device(), "cpu");
    o.device = "cuda:0";
    try {
        model::make_stage(f, c, model::StageSpec{0, 0, c.n_layer, true, true}, o, pool);
        GTEST_SKIP() << "a CUDA device is present: the GPU tests cover it";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_EQ(e.code(), ErrorCode::kNoDevice) << m;  // exit code 9, whether or not CUDA is built in
        EXPECT_NE(m.find("cuda:0"), std::string::npos) << m;
        EXPECT_NE(m.find("--devices cpu"), std::string::npos) << m;
    }
    o.device = "cuda:x";
    EXPECT_THROW(model::make_stage(f, c, model::StageSpec{0, 0, c.n_layer, true, true}, o, pool), Error);
}

// A CPU-only run of the CUDA build maps no CUDA library (the backend module is loaded only for a
// CUDA stage): the dynamic loader's own log of what it loads is read.
TEST(StageFactory, CpuOnlyProcessLoadsNoCudaLibrary) {
    const std::string out = ::testing::TempDir() + "/cpu_only_logits.f32";
    const std::string cmd = std::string("LD_DEBUG=libs ") + PIPELM_BINARY + " logits -m " + kTiny +
                            " --tokens 1,2,3 -t 1 -o " + out + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string log;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) log.append(buf, n);
    ASSERT_EQ(pclose(p), 0) << log;
    EXPECT_NE(log.find("calling init"), std::string::npos) << "LD_DEBUG gave no log:\n" << log;
    for (const char* lib : {"libcudart", "libcublas", "libpipelm_cuda", "libcuda.so"})
        EXPECT_EQ(log.find(lib), std::string::npos) << lib << " was loaded by a CPU-only run";
}

}  // namespace
}  // namespace pipelm
