// Model-file commands: tokenize, inspect, mkmodel, plan.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <iostream>
#include <sstream>
#include <tuple>

#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "launcher/session_net.h"
#include "launcher/simulate.h"
#include "runtime/base/log.h"
#include "runtime/hf/hf_folder.h"
#include "runtime/model/mkmodel.h"
#include "runtime/pipeline/planner.h"
#include "runtime/pipeline/protocol.h"
#include "runtime/pipeline/simulator.h"

namespace pipelm::launcher {

int cmd_tokenize(int argc, char** argv) {
    cli::Args a("tokenize", {{"--model", "-m", true, "FILE|DIR", "GGUF file, or Hugging Face folder (config.json, *.safetensors, tokenizer.json)", ""},
                             {"--text", "", true, "S", "text to tokenize", ""},
                             {"--file", "-f", true, "FILE", "read the text from a file", ""},
                             {"--special", "", false, "", "parse special tokens like [gMASK] and <|user|>", ""}});
    if (!a.parse(argc, argv, 2, "Prints the token ids of a text as a JSON array (no BOS is added).")) return 0;
    if (!a.has("--model")) PIPELM_THROW(ErrorCode::kInvalidArgument, "tokenize: pass -m FILE.gguf");
    std::string text = a.str("--text");
    if (a.has("--file")) {
        std::ifstream in(a.str("--file"), std::ios::binary);
        if (!in) PIPELM_THROW(ErrorCode::kIo, a.str("--file"), ": cannot read");
        text.assign(std::istreambuf_iterator<char>(in), {});
    }
    auto f = hf::open_model(a.str("--model"));
    tok::Tokenizer t(vocab_from_gguf(*f));
    const auto ids = t.encode(text, a.flag("--special"));
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < ids.size(); ++i) os << (i ? ", " : "") << ids[i];
    os << "]\n";
    std::fputs(os.str().c_str(), stdout);
    return 0;
}

namespace {

std::string value_to_string(const gguf::Value& v, size_t max_items = 8) {
    using gguf::ValueType;
    std::ostringstream os;
    switch (v.type) {
        case ValueType::kString: {
            std::string s = v.s.size() > 80 ? v.s.substr(0, 77) + "..." : v.s;
            for (auto& c : s)
                if (c == '\n') c = ' ';
            os << '"' << s << '"';
            break;
        }
        case ValueType::kF32: case ValueType::kF64: os << v.f; break;
        case ValueType::kBool: os << (v.u ? "true" : "false"); break;
        case ValueType::kArray: {
            os << "[" << gguf::value_type_name(v.elem_type) << " x " << v.size() << "]";
            if (v.size() > 0) {
                os << " ";
                for (size_t i = 0; i < v.size() && i < max_items; ++i) os << (i ? ", " : "") << value_to_string(v.at(i), 3);
                if (v.size() > max_items) os << ", ...";
            }
            break;
        }
        default: os << v.as_int(); break;
    }
    return os.str();
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
    cli::Args a("inspect", {{"--model", "-m", true, "FILE", "GGUF file (or give it as the argument)", ""}},
                {{"FILE", "--model"}});
    if (!a.parse(argc, argv, 2, "Prints a GGUF file's metadata, tensor table and bits per weight.")) return 0;
    if (!a.has("--model")) PIPELM_THROW(ErrorCode::kInvalidArgument, "inspect: pass FILE.gguf (or -m FILE.gguf)");
    auto f = hf::open_model(a.str("--model"));
    std::printf("file: %s\nGGUF version %u, alignment %llu, %zu metadata keys, %zu tensors, %llu bytes\n\n",
                f->path().c_str(), f->version(), (unsigned long long)f->alignment(), f->metadata().size(),
                f->tensors().size(), (unsigned long long)f->file_size());
    for (const auto& kv : f->metadata())
        std::printf("  %-44s %s\n", kv.first.c_str(), value_to_string(kv.second).c_str());
    std::printf("\n  %-36s %-8s %-22s %12s\n", "tensor", "type", "shape (ne)", "bytes");
    uint64_t total_bytes = 0, total_el = 0;
    std::map<std::string, std::pair<int, uint64_t>> by_type;
    for (const auto& t : f->tensors()) {
        std::ostringstream sh;
        sh << "{";
        for (size_t i = 0; i < t.ne.size(); ++i) sh << (i ? ", " : "") << t.ne[i];
        sh << "}";
        std::printf("  %-36s %-8s %-22s %12llu\n", t.name.c_str(), ggml_type_name(t.type), sh.str().c_str(),
                    (unsigned long long)t.bytes);
        total_bytes += t.bytes;
        total_el += static_cast<uint64_t>(t.n_elements());
        auto& bt = by_type[ggml_type_name(t.type)];
        bt.first++;
        bt.second += t.bytes;
    }
    std::printf("\ntypes:");
    for (const auto& bt : by_type) std::printf(" %s x%d (%.1f MiB)", bt.first.c_str(), bt.second.first, bt.second.second / 1048576.0);
    std::printf("\nparameters: %llu, tensor bytes: %llu, bits per weight: %.3f\n", (unsigned long long)total_el,
                (unsigned long long)total_bytes, total_el ? 8.0 * total_bytes / total_el : 0.0);
    if (f->has("general.architecture")) {
        try {
            auto cfg = model::Glm4Config::from_gguf(*f);
            std::printf("model: %s\n", cfg.summary().c_str());
        } catch (const Error& e) {
            std::printf("model: not loadable: %s\n", e.what());
        }
    }
    return 0;
}

int cmd_mkmodel(int argc, char** argv) {
    cli::Args a("mkmodel", {
        {"--out", "-o", true, "FILE", "output GGUF path", ""},
        {"--preset", "", true, "NAME", "shape preset: " + model::mkmodel_presets(), "tiny"},
        {"--layers", "", true, "N", "block_count", "preset"},
        {"--embd", "", true, "N", "embedding_length (hidden size)", "preset"},
        {"--heads", "", true, "N", "query heads", "preset"},
        {"--kv-heads", "", true, "N", "KV heads", "preset"},
        {"--head-dim", "", true, "N", "head dimension", "preset"},
        {"--rope-dim", "", true, "N", "rotary dimensions per head", "preset"},
        {"--ffn", "", true, "N", "feed_forward_length", "preset"},
        {"--vocab", "", true, "N", "vocabulary size (>= 266)", "preset"},
        {"--ctx", "", true, "N", "context_length", "preset"},
        {"--bias", "", false, "", "with q/k/v biases (as GLM-4-9B)", ""},
        {"--no-bias", "", false, "", "without q/k/v biases (as GLM-4-32B)", ""},
        {"--dtype", "", true, "TYPE", "one type for every 2-D weight: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl q4_k q5_k q6_k iq4_xs", "preset"},
        {"--ftype", "", true, "NAME", "llama-quantize file type, its per-tensor mix of types (instead of --dtype): " + model::ftype_names(), ""},
        {"--seed", "", true, "N", "random seed", "42"},
        {"--threads", "-t", true, "N", "threads", "all cores"},
    });
    if (!a.parse(argc, argv, 2,
                 "Writes a GLM-4-architecture GGUF with RANDOM weights (for tests and benchmarks: its text is noise)\n"
                 "and a byte-level tokenizer. Quantized types use pipelm's own round-to-nearest quantizers.\n"
                 "--ftype q4_k_m (etc.) gives each tensor the type llama.cpp's llama-quantize would (no imatrix):\n"
                 "output.weight q6_K, more bits for attn_v/ffn_down in some layers, 32-block types for rows\n"
                 "the 256-blocks cannot hold."))
        return 0;
    if (!a.has("--out")) PIPELM_THROW(ErrorCode::kInvalidArgument, "mkmodel: pass -o FILE.gguf");
    model::MkModelSpec s = model::mkmodel_preset(a.str("--preset"));
    auto set = [&](const char* flag, int& v) {
        if (a.has(flag)) v = static_cast<int>(a.integer(flag));
    };
    set("--layers", s.n_layer);
    set("--embd", s.n_embd);
    set("--heads", s.n_head);
    set("--kv-heads", s.n_head_kv);
    set("--head-dim", s.head_dim);
    set("--rope-dim", s.n_rot);
    set("--ffn", s.n_ff);
    set("--vocab", s.n_vocab);
    set("--ctx", s.n_ctx);
    if (a.flag("--bias")) s.qkv_bias = true;
    if (a.flag("--no-bias")) s.qkv_bias = false;
    if (a.has("--ftype") && a.has("--dtype"))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "mkmodel: pass either --ftype ", a.str("--ftype"), " or --dtype ",
                     a.str("--dtype"), ", not both (--dtype: one type for every weight; --ftype: llama-quantize's mix)");
    if (a.has("--dtype")) s.dtype = parse_ggml_type(a.str("--dtype"));
    if (a.has("--ftype")) s.ftype = model::parse_ftype(a.str("--ftype"));
    s.seed = static_cast<uint64_t>(a.integer("--seed"));
    const int threads = a.has("--threads") ? static_cast<int>(a.integer("--threads")) : default_threads(1);
    model::mkmodel_write(s, a.str("--out"), threads);
    const std::string types = s.ftype ? std::string("ftype ") + model::ftype_name(*s.ftype)
                                      : std::string(ggml_type_name(s.dtype));
    PIPELM_INFO("wrote ", a.str("--out"), ": ", model::mkmodel_params(s) / 1e6, " M parameters, ", s.n_layer,
                " layers, ", types, " (random weights)");
    return 0;
}

namespace {

// The shape a --preset (mkmodel's table) names, with --dtype as a weight type (bf16, q8_0, ...)
// or a llama-quantize file type (q4_k_m, ...): the config and the bytes each tensor would take.
std::pair<model::Glm4Config, pipeline::ModelCosts> preset_costs(const std::string& preset, const std::string& dtype) {
    model::MkModelSpec spec = model::mkmodel_preset(preset);
    if (!dtype.empty()) {
        std::string lower = dtype;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
        const std::string fts = ", " + model::ftype_names() + ",";
        if (fts.find(", " + lower + ",") != std::string::npos) spec.ftype = model::parse_ftype(lower);
        else spec.dtype = parse_ggml_type(lower);
    }
    model::Glm4Config cfg = model::mkmodel_config(spec);
    cfg.n_ctx_train = spec.n_ctx;
    auto costs = pipeline::ModelCosts::from_config(
        cfg, [&](model::TensorId id, int64_t ne0, int layer) { return model::mkmodel_matrix_type(spec, id, ne0, layer); });
    return {cfg, costs};
}

// Per-stage memory against the budget, totals and what a link carries per token (sizes from
// the wire format: the activation payload plus the encoded ubatch header).
void print_plan_summary(const std::vector<pipeline::StagePlan>& plan, const std::vector<uint64_t>& budget,
                        const model::Glm4Config& cfg, pipeline::Wire wire) {
    auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
    uint64_t total = 0;
    std::printf("\nstage  weights+KV MiB   budget MiB   margin MiB\n");
    for (const auto& p : plan) {
        const uint64_t need = p.weight_bytes + p.kv_bytes;
        total += need;
        const uint64_t b = budget.size() == 1 ? budget[0] : p.index < static_cast<int>(budget.size()) ? budget[p.index] : 0;
        if (b) std::printf("%5d  %14.1f   %10.1f   %+10.1f\n", p.index, mib(need), mib(b), mib(b) - mib(need));
        else std::printf("%5d  %14.1f   %10s   %10s\n", p.index, mib(need), "-", "-");
    }
    std::printf("total  %14.1f MiB (weights + KV; compute buffers not counted)\n", mib(total));
    if (plan.size() < 2) return;
    const int S = static_cast<int>(plan.size());
    pipeline::UbatchHeader h;  // a decode ubatch (1 token) as the last link carries it
    h.seq = h.pos = h.out_rows = {0};
    h.busy_s.assign(S - 1, 0);
    h.start_us.assign(S - 1, 0);
    const size_t header = pipeline::encode(h).size();
    const size_t act = static_cast<size_t>(cfg.n_embd) * (wire == pipeline::Wire::kF32 ? 4 : 2);
    std::printf("link: %zu bytes per token of activations (%d x %s) + a %zu-byte header per ubatch (+8 per more token);\n"
                "      a decode step sends %zu bytes over each of the %d links, then a small result back\n",
                act, cfg.n_embd, pipeline::wire_name(wire), header, act + header, S - 1);
}

// The simulator's prediction for this plan (runtime/pipeline/simulator.h, each stage's share of
// the compute from the plan): a 512-token prompt and 128 tokens for 1 and for S sequences, from
// a 1-stage calibration (--calib, or --pass-ms and --token-ms); without one, where to get it.
void print_plan_speed(const std::vector<pipeline::StagePlan>& plan, const model::Glm4Config& cfg,
                      const SessionOptions& o, const cli::Args& a) {
    const int S = static_cast<int>(plan.size());
    pipeline::SimModel m;
    if (!compute_model(a, m)) {
        std::printf("speed: needs a 1-stage calibration of this shape on the target machine (--calib FILE, or\n"
                    "  --pass-ms and --token-ms), e.g.\n"
                    "  pipelm mkmodel --preset NAME --ftype TYPE -o m.gguf   (when planning a --preset)\n"
                    "  pipelm bench -m m.gguf --stages 1 -p 64 -n 16 --sequences 1,4 -o jsonl > calib.jsonl\n"
                    "  pipelm plan ... --calib calib.jsonl   (or pipelm simulate --embd %d --calib calib.jsonl ...)\n",
                    cfg.n_embd);
        return;
    }
    if (!(m.pass_s >= 0 && m.token_s >= 0 && m.pass_s + m.token_s > 0))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "plan: the compute model needs --pass-ms, --token-ms >= 0 (not both 0)");
    for (const auto& p : plan) m.share.push_back(p.compute_share);
    m.bytes_per_token = static_cast<int64_t>(cfg.n_embd) * (o.wire == pipeline::Wire::kF32 ? 4 : 2);
    m.link_bps = parse_link_rate(a.str("--link-rate"));
    m.link_latency_s = a.number("--link-latency-us") * 1e-6;
    const auto pp = pipeline::simulate_prompt(m, 512, o.ubatch);
    const auto tg1 = pipeline::simulate_decode(m, 1, 128, 1, o.ubatch);
    const auto tgS = pipeline::simulate_decode(m, S, 128, 1, o.ubatch);
    std::printf("speed (simulated; compute %.3f ms per ubatch + %.4f ms per token, link %s): pp512 %.1f t/s, "
                "tg128@1seq %.1f t/s",
                m.pass_s * 1e3, m.token_s * 1e3, a.str("--link-rate").c_str(), pp.tps(), tg1.tps());
    if (S > 1) std::printf(", tg128@%dseq %.1f t/s", S, tgS.tps());
    std::printf("\n");
}

}  // namespace

int cmd_plan(int argc, char** argv) {
    std::vector<cli::FlagSpec> flags = cli::pipeline_flags();
    flags.push_back({"--preset", "", true, "NAME", "plan a model shape without a file: " + model::mkmodel_presets(), ""});
    flags.push_back({"--dtype", "", true, "TYPE", "with --preset: weight type (f16 bf16 q8_0 ...) or file type (" + model::ftype_names() + ")", "bf16"});
    flags.push_back({"--calib", "", true, "FILE", "1-stage `pipelm bench -o jsonl` rows of this shape: adds the simulated speed", ""});
    flags.push_back({"--pass-ms", "", true, "MS", "instead of --calib: fixed ms of a ubatch through the whole model", ""});
    flags.push_back({"--token-ms", "", true, "MS", "instead of --calib: ms per token of a ubatch", ""});
    flags.push_back({"--link-rate", "", true, "RATE", "link rate for the simulated speed: 10mbit, 1gbit, ... or inf", "1gbit"});
    flags.push_back({"--link-latency-us", "", true, "US", "latency added to every message (simulated speed)", "50"});
    cli::Args a("plan", flags);
    if (!a.parse(argc, argv, 2, "Prints how the model's layers are split into stages (device, layers, weight and KV\n"
                                "memory, share of the compute, margin against --mem, bytes per token on a link) and\n"
                                "refuses a plan that does not fit; with --mem and --split auto it finds the best-balanced\n"
                                "split that fits. Reads no weights; --preset glm4-32b --dtype q4_k_m needs no file.\n"
                                "Under mpirun, one stage per rank (as run)."))
        return 0;
    SessionOptions o = SessionOptions::from_args(a);
    if (a.has("--preset") == !o.model_path.empty())
        PIPELM_THROW(ErrorCode::kInvalidArgument, "plan: pass either -m FILE.gguf or --preset NAME (", model::mkmodel_presets(), ")");
    if (a.has("--dtype") && !a.has("--preset"))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "plan: --dtype goes with --preset (a file's types are its own)");
    // Under mpirun one stage per rank; rank 0 alone reads the model and prints the plan (or the error).
    const auto [world, rank] = net::mpi_world_from_env();
    if (world > 1) {
        if (!o.n_stages_from.empty() && o.n_stages != world)
            PIPELM_THROW(ErrorCode::kInvalidArgument, o.n_stages_from, " gives ", o.n_stages, " stages: mpirun started ",
                         world, " ranks and each rank is one stage (drop ", o.n_stages_from, " or match -np)");
        if (rank != 0) return 0;
        net::report_for_the_job();
    }
    model::Glm4Config cfg;
    pipeline::ModelCosts costs;
    std::string what;
    if (a.has("--preset")) {
        std::tie(cfg, costs) = preset_costs(a.str("--preset"), a.has("--dtype") ? a.str("--dtype") : "");
        what = "preset " + a.str("--preset") + " (" + (a.has("--dtype") ? a.str("--dtype") : std::string("bf16")) + ")";
    } else {
        auto f = hf::open_model(o.model_path);
        cfg = model::Glm4Config::from_gguf(*f);
        log_model(*f, cfg);
        costs = pipeline::ModelCosts::from_gguf(*f, cfg);
        what = f->path();
    }
    const int n_ctx = resolve_ctx(o, cfg);
    int S = o.n_stages;
    if (!o.workers.empty()) S = 1 + static_cast<int>(std::count(o.workers.begin(), o.workers.end(), ',')) + 1;
    if (world > 1) S = world;
    const pipeline::PlanRequest r = plan_request(o, cfg, S, n_ctx);
    auto plan = pipeline::make_plan(costs, r);
    std::printf("%s\n%s, context %d x %d sequence(s), KV %s/%s\n%s", what.c_str(), cfg.summary().c_str(), n_ctx,
                o.n_seq, ggml_type_name(o.cache_k), ggml_type_name(o.cache_v), pipeline::format_plan(plan).c_str());
    print_plan_summary(plan, r.mem_budget, cfg, o.wire);
    print_plan_speed(plan, cfg, o, a);
    return 0;
}

}  // namespace pipelm::launcher
