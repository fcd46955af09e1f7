// Hugging Face folders read directly (runtime/hf): logits bit-identical to the GGUF of the same
// weights (F32 sharded, BF16), each stage mapping only its own tensors, `pipelm convert`, and the
// errors for a lone .safetensors file and malformed headers. The folders are written at test time
// by ../shared/tools/mkglm4.py (python3 + numpy) into the build directory; without them the tests
// skip and say why.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "runtime/base/error.h"
#include "runtime/base/thread_pool.h"
#include "runtime/hf/hf_folder.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/stage.h"
#include "runtime/model/tensors.h"
#include "tests/testing/process.h"

namespace pipelm {
namespace {

namespace fs = std::filesystem;

const std::string kDir = std::string(PIPELM_HF_TEST_DIR);
const std::string kMk = std::string(PIPELM_SOURCE_DIR) + "/../shared/tools/mkglm4.py";
// glm4-tiny's shape (../shared/testdata/models/glm4-tiny/README.md), seed 1.
const std::string kTinyShape =
    " --seed 1 --n-layer 61 --n-embd 64 --n-head 4 --n-head-kv 2 --head-dim 16 --rope-dim 8 --n-ff 128 --ctx 256"
    " --eps 1e-5 --rope-base 10000";

int sh(const std::string& cmd) {
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A python3 that has numpy ("" if none).
std::string python() {
    for (const char* p : {"python3", "/usr/bin/python3"})
        if (sh(std::string(p) + " -c 'import numpy' >/dev/null 2>&1") == 0) return p;
    return "";
}

class HfFolder : public ::testing::Test {
protected:
    // f32: glm4-tiny in 3 shards with an index; bf16: the same shape, one model.safetensors.
    static void SetUpTestSuite() {
        if (!fs::exists(kMk)) {
            skip_ = kMk + " is missing (a clone without ../shared)";
            return;
        }
        const std::string py = python();
        if (py.empty()) {
            skip_ = "no python3 with numpy (apt-get install python3-numpy)";
            return;
        }
        fs::create_directories(kDir);
        for (const auto& [name, extra] : {std::pair<std::string, std::string>{"f32", " --shards 3"}, {"bf16", " --dtype bf16"}})
            if (!fs::exists(kDir + "/" + name + "/tokenizer_config.json")) {
                // Written aside and renamed: ctest -j runs each test in its own process.
                const std::string tmp = kDir + "/" + name + ".tmp" + std::to_string(::getpid());
                ASSERT_EQ(sh(py + " " + kMk + " --out " + tmp + " --name " + name + kTinyShape + extra + " >/dev/null"), 0);
                std::error_code ec;
                fs::rename(tmp, kDir + "/" + name, ec);
                if (ec) fs::remove_all(tmp);  // another process was first
            }
    }
    void SetUp() override {
        if (!skip_.empty()) {
            GTEST_SKIP() << skip_;
        }
    }
    // `pipelm logits` of a fixed prompt on model `m` (extra flags, e.g. --stages 4) into `out`.
    static int logits(const std::string& m, const std::string& out, const std::string& extra = "") {
        return sh(std::string(PIPELM_BINARY) + " logits -m " + m + " -t 1 " + extra +
                  " -p '[gMASK]<sop><|user|>\nHello, 世界 1234' -o " + out + " >/dev/null 2>&1");
    }
    static std::string skip_;
};
std::string HfFolder::skip_;

// Tolerance: none. The folder and the GGUF hold the same bits, so every logit is the same bits.
TEST_F(HfFolder, F32ShardedFolderGivesTheGgufsLogits) {
    ASSERT_EQ(logits(kDir + "/f32/model.gguf", kDir + "/g.f32"), 0);
    ASSERT_EQ(logits(kDir + "/f32", kDir + "/h.f32", "--stages 3"), 0);
    const std::string g = slurp(kDir + "/g.f32");
    ASSERT_TRUE(!g.empty() && g.size() % (666 * 4) == 0) << g.size();
    EXPECT_TRUE(g == slurp(kDir + "/h.f32")) << "the folder's logits differ from the GGUF's";
    // Four MPI ranks over the folder, each opening it itself.
    if (sh("command -v mpirun >/dev/null") != 0) return;
    // detect_leaks=0: a sanitizer build would report Open MPI's own allocations at exit.
    ASSERT_EQ(sh("ASAN_OPTIONS=detect_leaks=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 4 " +
                 std::string(PIPELM_BINARY) + " logits -m " + kDir + "/f32 -t 1 -p '[gMASK]<sop><|user|>\nHello, 世界 1234' -o " +
                 kDir + "/m.f32 >/dev/null 2>&1"),
              0);
    EXPECT_TRUE(g == slurp(kDir + "/m.f32")) << "4 MPI ranks over the folder differ from the GGUF";
}

TEST_F(HfFolder, Bf16FolderGivesTheBf16GgufsLogits) {
    ASSERT_EQ(logits(kDir + "/bf16/model.gguf", kDir + "/gb.f32"), 0);
    ASSERT_EQ(logits(kDir + "/bf16", kDir + "/hb.f32"), 0);
    EXPECT_TRUE(slurp(kDir + "/gb.f32") == slurp(kDir + "/hb.f32"));
}

// The folder opens as the GGUF mkglm4 writes (the converter's keys, names, shapes and types).
TEST_F(HfFolder, MetadataAndTensorTableMatchTheGguf) {
    auto h = hf::open_model(kDir + "/bf16");
    auto g = hf::open_model(kDir + "/bf16/model.gguf");
    ASSERT_EQ(h->metadata().size(), g->metadata().size());
    for (size_t k = 0; k < g->metadata().size(); ++k) EXPECT_EQ(h->metadata()[k].first, g->metadata()[k].first);
    EXPECT_EQ(h->get_string_array("tokenizer.ggml.tokens"), g->get_string_array("tokenizer.ggml.tokens"));
    EXPECT_EQ(h->get_int_array("tokenizer.ggml.token_type"), g->get_int_array("tokenizer.ggml.token_type"));
    EXPECT_EQ(h->get_string_array("tokenizer.ggml.merges"), g->get_string_array("tokenizer.ggml.merges"));
    EXPECT_EQ(h->get_string("tokenizer.chat_template"), g->get_string("tokenizer.chat_template"));
    for (const char* k : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.padding_token_id", "general.file_type", "glm4.rope.dimension_count"})
        EXPECT_EQ(h->get_int(k), g->get_int(k)) << k;
    ASSERT_EQ(h->tensors().size(), g->tensors().size());
    for (size_t k = 0; k < g->tensors().size(); ++k) {
        const auto &a = h->tensors()[k], &b = g->tensors()[k];
        EXPECT_EQ(a.name, b.name);
        EXPECT_EQ(a.ne, b.ne) << a.name;
        EXPECT_EQ(a.type, b.type) << a.name;
        EXPECT_EQ(a.offset, b.offset) << a.name;
        ASSERT_EQ(a.bytes, b.bytes) << a.name;
        EXPECT_EQ(std::memcmp(h->data(a), g->data(b), a.bytes), 0) << a.name;
    }
}

// Four stages over the folder, each from its own open (as four ranks): a stage maps exactly the
// 2-D weights it reads, nothing of another stage's layers.
TEST_F(HfFolder, EachStageMapsOnlyItsOwnTensors) {
    const int n = 4;
    ThreadPool pool(1);
    std::set<std::string> all;
    for (int s = 0; s < n; ++s) {
        auto f = hf::open_model(kDir + "/f32");
        EXPECT_TRUE(hf::mapped_ranges(*f).empty()) << "opening maps nothing";
        const model::Glm4Config c = model::Glm4Config::from_gguf(*f);
        const model::StageSpec spec{s, c.n_layer * s / n, c.n_layer * (s + 1) / n, s == 0, s == n - 1};
        model::StageOptions o;
        o.n_ctx = 16;
        auto stage = model::make_stage(f, c, spec, o, pool);
        std::set<std::string> want, got;
        model::for_each_tensor(c, c.n_layer, [&](model::TensorId id, int l) {
            if (model::tensor_def(id).kind == model::TensorKind::kMatrix && model::stage_reads(id, l, spec, c))
                want.insert(model::tensor_name(id, l));
        });
        for (const auto& r : hf::mapped_ranges(*f)) {
            EXPECT_TRUE(got.insert(r.tensor).second) << r.tensor << " mapped twice";
            EXPECT_TRUE(all.insert(r.file + ":" + std::to_string(r.begin)).second) << r.tensor << " mapped by two stages";
            EXPECT_EQ(r.end - r.begin, f->tensor(r.tensor).bytes) << r.tensor;
        }
        EXPECT_EQ(got, want) << "stage " << s;
    }
}

TEST_F(HfFolder, ConvertWritesTheGgufOfTheFolder) {
    const std::string out = kDir + "/converted-bf16.gguf";
    ASSERT_EQ(sh(std::string(PIPELM_BINARY) + " convert " + kDir + "/bf16 -o " + out + " >/dev/null 2>&1"), 0);
    // mkglm4 writes the converter's layout; the only cosmetic field, general.name, is the folder's
    // name in both, so the files are the same bytes.
    EXPECT_TRUE(slurp(out) == slurp(kDir + "/bf16/model.gguf")) << out << " differs from mkglm4's GGUF";
    ASSERT_EQ(logits(out, kDir + "/cb.f32"), 0);
    ASSERT_EQ(logits(kDir + "/bf16", kDir + "/cb-folder.f32"), 0);
    EXPECT_TRUE(slurp(kDir + "/cb.f32") == slurp(kDir + "/cb-folder.f32"));
    // A llama-quantize type: the per-tensor mix, and a file that runs.
    const std::string q = kDir + "/converted-q8.gguf";
    ASSERT_EQ(sh(std::string(PIPELM_BINARY) + " convert " + kDir + "/f32 --ftype q8_0 -o " + q + " >/dev/null 2>&1"), 0);
    auto f = hf::open_model(q);
    EXPECT_EQ(f->tensor(model::tensor_name(model::TensorId::kAttnQ, 0)).type, GgmlType::kQ8_0);
    EXPECT_EQ(f->tensor(model::tensor_name(model::TensorId::kAttnNorm, 0)).type, GgmlType::kF32);
    EXPECT_EQ(f->get_int("general.file_type"), 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
    EXPECT_EQ(logits(q, kDir + "/q.f32"), 0);
}

// quantize reads a folder as every command does (-m DIR): the folder's weights in the folder's
// GGUF layout, so quantizing the BF16 folder and mkglm4's BF16 GGUF of it gives the same bytes.
TEST_F(HfFolder, QuantizeTakesTheFolder) {
    const std::string a = kDir + "/quant-folder.gguf", b = kDir + "/quant-gguf.gguf";
    ASSERT_EQ(sh(std::string(PIPELM_BINARY) + " quantize " + kDir + "/bf16 " + a + " q8_0 >/dev/null 2>&1"), 0);
    ASSERT_EQ(sh(std::string(PIPELM_BINARY) + " quantize " + kDir + "/bf16/model.gguf " + b + " q8_0 >/dev/null 2>&1"), 0);
    EXPECT_TRUE(slurp(a) == slurp(b)) << a << " differs from " << b;
    EXPECT_EQ(logits(a, kDir + "/qf.f32"), 0);
}

TEST_F(HfFolder, OneSafetensorsFileIsRefusedWithAPointerToTheFolder) {
    const std::string err = kDir + "/single.err";
    const int rc = sh(std::string(PIPELM_BINARY) + " logits -m " + kDir + "/bf16/model.safetensors --tokens 1 -o " + kDir + "/x.f32 2>" + err);
    EXPECT_EQ(rc, 2);
    const std::string m = slurp(err);
    EXPECT_NE(m.find("-m " + kDir + "/bf16"), std::string::npos) << m;
    EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 1) << m;
}

// A copy of the bf16 folder whose model.safetensors is rewritten by `edit`; opening must throw
// kFormat naming the file and containing `want`.
void expect_malformed(const std::function<void(std::string&)>& edit, const std::string& want) {
    const std::string d = kDir + "/bad";
    fs::remove_all(d);
    fs::copy(kDir + "/bf16", d);
    fs::remove(d + "/model.gguf");
    std::string st = slurp(d + "/model.safetensors");
    edit(st);
    std::ofstream(d + "/model.safetensors", std::ios::binary | std::ios::trunc) << st;
    try {
        hf::open_model(d);
        ADD_FAILURE() << "no error for: " << want;
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kFormat) << e.what();
        EXPECT_NE(std::string(e.what()).find(d + "/model.safetensors"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
}

TEST_F(HfFolder, MalformedSafetensorsNameTheFileAndTensor) {
    expect_malformed([](std::string& s) { s.resize(s.size() - 100); }, "outside the");  // truncated data
    expect_malformed([](std::string& s) { s[7] = 0x7f; }, "header length");             // huge header length
    expect_malformed([](std::string& s) { s.resize(5); }, "too short");
    expect_malformed([](std::string& s) { s[8] = '['; }, "not a JSON object");
    expect_malformed(
        [](std::string& s) {
            const size_t p = s.find("\"shape\":[", s.find("model.norm.weight"));
            s[p + 9] = '9';  // 64 -> 94 elements: the offsets no longer hold the shape
        },
        "tensor 'model.norm.weight'");
}

// TCP mode: two workers started with -m DIR serve the folder's stages 1 and 2.
TEST_F(HfFolder, TcpWorkersServeTheFolder) {
    using testing::Ms;
    const std::string token = kDir + "/token";
    std::ofstream(token, std::ios::trunc) << "hf-test-secret-0123456789abcdef\n";
    fs::permissions(token, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
    std::vector<testing::Worker> ws;
    for (int i = 0; i < 2; ++i) {
        ws.push_back(testing::start_worker(kDir + "/worker" + std::to_string(i) + ".log", token,
                                           {"-m", kDir + "/f32", "--once", "-t", "1"}));
        ASSERT_FALSE(ws.back().address.empty()) << ws.back().proc.log();
    }
    ASSERT_EQ(logits(kDir + "/f32/model.gguf", kDir + "/tg.f32"), 0);
    const auto r = testing::run_bounded(
        testing::pipelm_argv({"logits", "-m", kDir + "/f32", "-t", "1", "-p", "[gMASK]<sop><|user|>\nHello, 世界 1234", "-o",
                              kDir + "/tw.f32", "--workers", ws[0].address + "," + ws[1].address, "--token-file", token}),
        kDir + "/tcp.log", Ms(60000));
    ASSERT_EQ(r.status, 0) << slurp(kDir + "/tcp.log");
    EXPECT_TRUE(slurp(kDir + "/tg.f32") == slurp(kDir + "/tw.f32"));
    for (auto& w : ws) EXPECT_TRUE(w.proc.wait_for(Ms(15000)).has_value()) << w.proc.log();
}

// A copy of the bf16 folder without lm_head.weight (its bytes stay, unreferenced) and with
// config.json's tie_word_embeddings = `tie`.
std::string untied_copy(const std::string& name, bool tie) {
    const std::string d = kDir + "/" + name;
    fs::remove_all(d);
    fs::copy(kDir + "/bf16", d);
    fs::remove(d + "/model.gguf");
    const std::string st = slurp(d + "/model.safetensors");
    uint64_t n = 0;
    for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<uint8_t>(st[k]);
    nlohmann::json h = nlohmann::json::parse(st.substr(8, n));
    h.erase("lm_head.weight");
    std::string hs = h.dump();
    hs.resize((hs.size() + 7) / 8 * 8, ' ');
    std::string le(8, '\0');
    for (int k = 0; k < 8; ++k) le[k] = static_cast<char>((hs.size() >> (8 * k)) & 0xff);
    std::ofstream(d + "/model.safetensors", std::ios::binary | std::ios::trunc) << le << hs << st.substr(8 + n);
    nlohmann::json c = nlohmann::json::parse(slurp(d + "/config.json"));
    c["tie_word_embeddings"] = tie;
    std::ofstream(d + "/config.json", std::ios::trunc) << c.dump(2);
    return d;
}

// tie_word_embeddings: no output.weight, the head reads token_embd (on the last stage too).
TEST_F(HfFolder, TiedEmbeddingsHaveNoOutputTensor) {
    const std::string d = untied_copy("tied", true);
    auto f = hf::open_model(d);
    EXPECT_EQ(f->find_tensor(model::tensor_name(model::TensorId::kOutput)), nullptr);
    EXPECT_TRUE(model::Glm4Config::from_gguf(*f).tied_output);
    ASSERT_EQ(logits(d, kDir + "/t1.f32"), 0);
    ASSERT_EQ(logits(d, kDir + "/t3.f32", "--stages 3"), 0);
    EXPECT_TRUE(slurp(kDir + "/t1.f32") == slurp(kDir + "/t3.f32"));
    try {
        hf::open_model(untied_copy("untied", false));
        ADD_FAILURE() << "a folder without lm_head and tie_word_embeddings false opened";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kFormat) << e.what();
        EXPECT_NE(std::string(e.what()).find("lm_head.weight"), std::string::npos) << e.what();
    }
}

// A tensor whose elements are not at a multiple of their size (every BF16 tensor one byte off)
// is copied to aligned memory at mapping, and computes the same bits.
TEST_F(HfFolder, MisalignedTensorsGiveTheSameLogits) {
    const std::string d = kDir + "/misaligned";
    fs::remove_all(d);
    fs::copy(kDir + "/bf16", d);
    fs::remove(d + "/model.gguf");
    const std::string st = slurp(d + "/model.safetensors");
    uint64_t n = 0;
    for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<uint8_t>(st[k]);
    nlohmann::json h = nlohmann::json::parse(st.substr(8, n));
    for (auto& [name, e] : h.items())
        if (name != "__metadata__")
            for (auto& o : e["data_offsets"]) o = o.get<uint64_t>() + 1;
    std::string hs = h.dump();
    hs.resize((hs.size() + 7) / 8 * 8, ' ');
    std::string le(8, '\0');
    for (int k = 0; k < 8; ++k) le[k] = static_cast<char>((hs.size() >> (8 * k)) & 0xff);
    std::ofstream(d + "/model.safetensors", std::ios::binary | std::ios::trunc)
        << le << hs << std::string(1, '\0') << st.substr(8 + n);
    ASSERT_EQ(logits(kDir + "/bf16/model.gguf", kDir + "/ma-g.f32"), 0);
    ASSERT_EQ(logits(d, kDir + "/ma-h.f32", "--stages 2"), 0);
    EXPECT_TRUE(slurp(kDir + "/ma-g.f32") == slurp(kDir + "/ma-h.f32"));
}

TEST_F(HfFolder, IndexMayNameOnlyFilesOfTheFolder) {
    const std::string d = kDir + "/badindex";
    fs::remove_all(d);
    fs::copy(kDir + "/f32", d);
    nlohmann::json j = nlohmann::json::parse(slurp(d + "/model.safetensors.index.json"));
    j["weight_map"]["model.norm.weight"] = "../model.safetensors";
    std::ofstream(d + "/model.safetensors.index.json", std::ios::trunc) << j.dump();
    try {
        hf::open_model(d);
        ADD_FAILURE() << "an index naming ../ opened";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kFormat) << e.what();
        EXPECT_NE(std::string(e.what()).find("model.norm.weight"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace pipelm
