#include "launcher/cli.h"

#include <cstdio>
#include <cstring>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <random>
#include <sstream>
#include <thread>

#include "runtime/base/error.h"
#include "runtime/base/log.h"

namespace pipelm::cli {
namespace {

// --threads: each is an OS thread with its own stack; far more than any host has cores is a typo.
constexpr int64_t kMaxThreads = 1024;
constexpr double kMaxInt32 = 2147483647.0;

// The accepted values of every numeric flag, by name, for every command that declares it (a
// name means the same thing in every command). Checked when the flag is parsed, so a value is
// never silently wrapped, truncated or turned into 0 by the cast at its use.
struct NumericRange {
    const char* name;
    double lo, hi;
    bool integer;
    const char* note;  // said after the range, "" for nothing
};
constexpr NumericRange kRanges[] = {
    {"--threads", 1, kMaxThreads, true, ""},
    {"--ctx", 1, 1 << 20, true, "KV rows per sequence"},
    {"--ubatch", 1, 1 << 16, true, ""},
    {"--stages", 1, 1024, true, ""},
    {"--parallel", 1, 4096, true, ""},
    {"--connect-timeout", 0.001, 86400, false, "seconds"},
    {"--peer-timeout", 0.2, 86400, false, "seconds"},
    {"--temp", 0, 1000, false, "0 = greedy"},
    {"--top-k", 0, kMaxInt32, true, "0 = off"},
    {"--top-p", 0, 1, false, "1 = off"},
    {"--min-p", 0, 1, false, "0 = off"},
    {"--repeat-penalty", 0.001, 1000, false, "1 = off"},
    {"--repeat-last-n", 0, 1 << 20, true, ""},
    {"--seed", -1, 9.2e18, true, "-1 = a random seed, printed"},
    {"--n-predict", 1, 1 << 20, true, "tokens to generate"},
    {"--n-gen", 0, 1 << 20, true, "0 = no generation test"},
    {"--n-prompt", 0, 1 << 20, true, "0 = no prompt test"},
    {"--repetitions", 1, 10000, true, ""},
    {"--seq-prompt", 1, 1 << 20, true, ""},
    {"--chunks", 1, kMaxInt32, true, "windows to score"},
    {"--layers", 1, 4096, true, ""},
    {"--embd", 1, 1 << 20, true, ""},
    {"--heads", 1, 4096, true, ""},
    {"--kv-heads", 1, 4096, true, ""},
    {"--head-dim", 1, 4096, true, ""},
    {"--rope-dim", 0, 4096, true, ""},
    {"--ffn", 1, 1 << 22, true, ""},
    {"--vocab", 1, 1 << 24, true, ""},
    {"--host-cores", 0, 1 << 16, true, "0 = a core per thread"},
};

const NumericRange* range_of(const std::string& name) {
    for (const auto& r : kRanges)
        if (name == r.name) return &r;
    return nullptr;
}

// llama.cpp's spellings. With `ours` set the meaning is the same and the flag is taken as
// `ours`; without it there is no such knob in pipelm and `hint` says what to use instead.
struct LlamaName {
    const char* name;
    const char* ours;
    const char* hint;
};
constexpr LlamaName kLlamaNames[] = {
    {"--ctx-size", "--ctx", ""},
    {"--ubatch-size", "--ubatch", ""},
    {"--threads-batch", "--threads-batch", ""},  // handled by reconcile_threads_batch()
    {"-tb", "--threads-batch", ""},
    {"-ngl", nullptr, "pipelm places whole stages, not layers: give each stage a device with --devices "
                      "(e.g. cuda:0,cpu) and its layers with --split (e.g. 40,21)"},
    {"--n-gpu-layers", nullptr, "pipelm places whole stages, not layers: give each stage a device with "
                                "--devices (e.g. cuda:0,cpu) and its layers with --split (e.g. 40,21)"},
    {"-sm", nullptr, "pipelm always splits by layers (pipeline stages): choose them with --split and --devices"},
    {"--split-mode", nullptr, "pipelm always splits by layers (pipeline stages): choose them with --split and --devices"},
    {"-ts", nullptr, "give layers per stage with --split (e.g. --split 30,31) and devices with --devices"},
    {"--tensor-split", nullptr, "give layers per stage with --split (e.g. --split 30,31) and devices with --devices"},
    {"-b", nullptr, "pipelm has no logical batch: prompts flow through the stages in ubatches of --ubatch tokens"},
    {"--batch-size", nullptr, "pipelm has no logical batch: prompts flow through the stages in ubatches of --ubatch "
                              "tokens"},
};

// Edits (insert, delete, substitute, swap two neighbours) that turn a into b: "rnu" is one from
// "run".
size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i)
        for (size_t j = 1; j <= b.size(); ++j) {
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    return d[a.size()][b.size()];
}

std::string format_bound(double v) {
    std::ostringstream os;
    os << std::setprecision(12) << v;
    return os.str();
}

}  // namespace

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
    std::string best;
    size_t best_d = std::max<size_t>(1, word.size() / 3) + 1;
    for (const auto& c : candidates) {
        const size_t d = edit_distance(word, c);
        if (d < best_d) best_d = d, best = c;
    }
    return best;
}

Args::Args(std::string command, std::vector<FlagSpec> specs, std::vector<PositionalSpec> positionals)
    : command_(std::move(command)), specs_(std::move(specs)), positionals_(std::move(positionals)) {
    specs_.push_back({"--help", "-h", false, "", "show this help", ""});
}

const FlagSpec* Args::find(const std::string& arg) const {
    for (const auto& s : specs_)
        if (arg == s.name || (!s.alias.empty() && arg == s.alias)) return &s;
    return nullptr;
}

std::string Args::help(const std::string& summary) const {
    std::ostringstream os;
    os << "usage: pipelm " << command_ << " [flags]";
    for (const auto& p : positionals_) os << " " << p.name;
    os << "\n\n" << summary << "\n\nflags:\n";
    for (const auto& s : specs_) {
        std::string left = "  " + (s.alias.empty() ? "" : s.alias + ", ") + s.name;
        if (s.takes_value) left += " " + (s.value_name.empty() ? std::string("X") : s.value_name);
        if (left.size() < 30) left.resize(30, ' ');
        else left += "\n" + std::string(30, ' ');
        os << left << s.help;
        if (!s.default_value.empty()) os << " (default: " << s.default_value << ")";
        os << "\n";
    }
    return os.str();
}

bool Args::take_llama_name(const std::string& arg, int argc, char** argv, int& i) {
    if (arg == "-fa" || arg == "--flash-attn") {
        // llama.cpp: -fa [on|off|auto]. Attention here is always exact FP32 (tiled on CUDA).
        if (i + 1 < argc && (!std::strcmp(argv[i + 1], "on") || !std::strcmp(argv[i + 1], "off") ||
                             !std::strcmp(argv[i + 1], "auto")))
            ++i;
        PIPELM_INFO(arg, " accepted: pipelm's attention is always exact (FP32 scores and sums, tiled on CUDA)");
        return true;
    }
    for (const auto& l : kLlamaNames) {
        if (arg != l.name) continue;
        if (!l.ours)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", arg, " (llama.cpp's) has no counterpart in `pipelm ",
                         command_, "`: ", l.hint);
        const std::string ours = l.ours;
        if (ours != "--threads-batch" && !find(ours)) return false;
        if (ours == "--threads-batch" && !find("--threads")) return false;
        if (i + 1 >= argc)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", arg, " of `pipelm ", command_, "` needs a value");
        const std::string value = argv[++i];
        if (ours != "--threads-batch") check_value(*find(ours), value, arg);
        values_[ours] = value;
        return true;
    }
    return false;
}

void Args::check_value(const FlagSpec& s, const std::string& value, const std::string& given) const {
    const NumericRange* r = range_of(s.name);
    if (!r) return;
    const std::string where =
        "flag " + (given.empty() || given == s.name ? s.name : given + " (" + s.name + ")") + " of `pipelm " + command_ + "`: ";
    double x = 0;
    char* end = nullptr;
    errno = 0;
    if (r->integer) {
        const long long v = std::strtoll(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0')
            PIPELM_THROW(ErrorCode::kInvalidArgument, where, "'", value, "' is not an integer");
        if (errno == ERANGE)
            PIPELM_THROW(ErrorCode::kInvalidArgument, where, value, " does not fit in 64 bits: give ", format_bound(r->lo),
                         " to ", format_bound(r->hi));
        x = static_cast<double>(v);
    } else {
        x = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0')
            PIPELM_THROW(ErrorCode::kInvalidArgument, where, "'", value, "' is not a number");
        if (!std::isfinite(x))
            PIPELM_THROW(ErrorCode::kInvalidArgument, where, "'", value, "' is not a finite number: give ",
                         format_bound(r->lo), " to ", format_bound(r->hi));
    }
    if (x < r->lo || x > r->hi) {
        std::string extra = *r->note ? std::string(" (") + r->note + ")" : std::string();
        if (s.name == "--threads")
            extra = " (this host has " + std::to_string(std::thread::hardware_concurrency()) + " cores)";
        PIPELM_THROW(ErrorCode::kInvalidArgument, where, value, " is out of range: give ", format_bound(r->lo), " to ",
                     format_bound(r->hi), extra);
    }
}

// llama.cpp's --threads-batch: pipelm runs prompt and generation with one thread count.
void Args::reconcile_threads_batch() {
    auto tb = values_.find("--threads-batch");
    if (tb == values_.end()) return;
    const std::string v = tb->second;
    values_.erase(tb);
    auto t = values_.find("--threads");
    if (t != values_.end() && t->second != v)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flag --threads-batch ", v, " differs from --threads ", t->second,
                     ": pipelm runs prompts and generation with the same threads; give --threads only");
    check_value(*find("--threads"), v, "--threads-batch");
    values_["--threads"] = v;
}

bool Args::parse(int argc, char** argv, int first, const std::string& summary) {
    std::vector<std::string> words;  // positionals, in order
    for (int i = first; i < argc; ++i) {
        std::string a = argv[i];
        if (!positionals_.empty() && !a.empty() && a[0] != '-') {
            if (words.size() == positionals_.size()) {
                std::string names;
                for (const auto& p : positionals_) names += " " + p.name;
                PIPELM_THROW(ErrorCode::kInvalidArgument, "`pipelm ", command_, "` takes", names, "; '", a,
                             "' is one argument too many");
            }
            words.push_back(a);
            continue;
        }
        std::string value;
        bool has_inline = false;
        const size_t eq = a.find('=');
        if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = a.substr(eq + 1);
            a = a.substr(0, eq);
            has_inline = true;
        }
        const FlagSpec* s = find(a);
        if (!s && !has_inline && take_llama_name(a, argc, argv, i)) continue;
        if (!s) {
            std::vector<std::string> names;
            for (const auto& f : specs_) {
                names.push_back(f.name);
                if (!f.alias.empty()) names.push_back(f.alias);
            }
            const std::string near = closest(a, names);
            PIPELM_THROW(ErrorCode::kInvalidArgument, "unknown flag '", a, "' for `pipelm ", command_, "`",
                         near.empty() ? std::string() : " (did you mean " + near + "?)", "; see `pipelm ", command_,
                         " --help`");
        }
        if (s->name == "--help") {
            std::fputs(help(summary).c_str(), stdout);
            return false;
        }
        if (s->takes_value) {
            if (!has_inline) {
                if (i + 1 >= argc)
                    PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", s->name, " of `pipelm ", command_, "` needs a value (",
                                 s->value_name, ")");
                value = argv[++i];
            }
            check_value(*s, value);
            values_[s->name] = value;
        } else {
            if (has_inline) PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", s->name, " takes no value");
            values_[s->name] = "1";
        }
    }
    for (size_t k = 0; k < words.size(); ++k) {
        const PositionalSpec& p = positionals_[k];
        auto it = values_.find(p.flag);
        if (it != values_.end() && it->second != words[k])
            PIPELM_THROW(ErrorCode::kInvalidArgument, "`pipelm ", command_, "`: ", p.name, " '", words[k], "' and ", p.flag,
                         " '", it->second, "' differ: give one");
        check_value(*find(p.flag), words[k], p.name);
        values_[p.flag] = words[k];
    }
    reconcile_threads_batch();
    // -v / -q act here, so that every command declaring them honours them from its first line on
    // (the CUDA module takes the level when a cuda stage is made).
    if (has("--verbose") && has("--quiet"))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flags -v (--verbose) and -q (--quiet) of `pipelm ", command_,
                     "` contradict each other: give one");
    if (has("--verbose")) set_log_level(LogLevel::kDebug);
    if (has("--quiet")) set_log_level(LogLevel::kError);
    return true;
}

bool Args::has(const std::string& name) const { return values_.count(name) != 0; }

std::string Args::str(const std::string& name) const {
    auto it = values_.find(name);
    if (it != values_.end()) return it->second;
    for (const auto& s : specs_)
        if (s.name == name) return s.default_value;
    PIPELM_THROW(ErrorCode::kInternal, "flag ", name, " not declared for ", command_);
}

int64_t Args::integer(const std::string& name) const {
    const std::string v = str(name);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno == ERANGE)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", name, " of `pipelm ", command_, "`: '", v,
                     "' is not a 64-bit integer");
    return x;
}

double Args::number(const std::string& name) const {
    const std::string v = str(name);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !std::isfinite(x))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", name, " of `pipelm ", command_, "`: '", v,
                     "' is not a finite number");
    return x;
}

std::vector<int64_t> Args::integers(const std::string& name) const {
    const std::string v = str(name);
    const FlagSpec* spec = find(name);
    std::vector<int64_t> out;
    size_t pos = 0;
    while (true) {
        const size_t comma = v.find(',', pos);
        const std::string item = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (item.empty())
            PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", name, " of `pipelm ", command_, "`: '", v,
                         "' has an empty entry: give values like 1,2,3");
        if (spec) check_value(*spec, item);
        char* end = nullptr;
        errno = 0;
        const long long x = std::strtoll(item.c_str(), &end, 10);
        if (*end != '\0' || errno == ERANGE)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", name, " of `pipelm ", command_, "`: '", item,
                         "' is not an integer");
        out.push_back(x);
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

sampling::SamplerParams sampler_params(const Args& a) {
    sampling::SamplerParams p;
    p.temperature = static_cast<float>(a.number("--temp"));
    p.top_k = static_cast<int>(a.integer("--top-k"));
    p.top_p = static_cast<float>(a.number("--top-p"));
    p.min_p = static_cast<float>(a.number("--min-p"));
    p.repeat_penalty = static_cast<float>(a.number("--repeat-penalty"));
    p.repeat_last_n = static_cast<int>(a.integer("--repeat-last-n"));
    const int64_t seed = a.integer("--seed");
    if (seed == -1) {
        std::random_device rd;
        // 53 bits: every such seed is within --seed's range (up to 9.2e18) and exact as a double,
        // so the printed seed is always accepted back (63 bits were refused 0.25 % of the time).
        p.seed = (static_cast<uint64_t>(rd()) << 32 | rd()) & ((uint64_t{1} << 53) - 1);
        PIPELM_INFO("seed: ", p.seed, " (give --seed ", p.seed, " to repeat this run)");
    } else {
        p.seed = static_cast<uint64_t>(seed);
    }
    return p;
}

std::vector<FlagSpec> pipeline_flags() {
    return {
        {"--model", "-m", true, "FILE|DIR", "GGUF file, or Hugging Face folder (config.json, *.safetensors, tokenizer.json)", ""},
        {"--threads", "-t", true, "N", "compute threads per stage (per rank under mpirun)", "all cores / stages"},
        {"--ctx", "-c", true, "N", "context length (KV cache rows per sequence)", "model's, at most 4096"},
        {"--ubatch", "-ub", true, "N", "tokens per ubatch flowing through the stages", "64"},
        {"--stages", "", true, "N", "in-process pipeline stages (threads in this process)", "1"},
        {"--split", "", true, "auto|mem|a,b,..", "layers per stage: balanced, memory-proportional or explicit counts", "auto"},
        {"--mem", "", true, "SIZES", "memory budget per stage, e.g. 8G,8G (plans that do not fit are refused; TCP mode: a lost stage with no standby goes to the survivors that have room)", ""},
        {"--devices", "", true, "LIST", "device per stage: cpu or cuda:N (e.g. cuda:0,cpu)", "cpu"},
        {"--workers", "", true, "H:P,..", "TCP mode: worker addresses for stages 1..N-1 (this process is stage 0)", ""},
        {"--standby", "", true, "H:P,..", "TCP mode: spare workers; a lost stage is given to the next one and the job goes on", ""},
        {"--token-file", "", true, "FILE", "TCP mode: file with the shared secret token", ""},
        {"--connect-timeout", "", true, "SEC", "TCP mode: how long to retry reaching workers", "30"},
        {"--peer-timeout", "", true, "SEC", "TCP mode: silence (no data, no heartbeat; heartbeats every SEC/4) after which a peer is lost", "10"},
        {"--wire", "", true, "f32|bf16", "format of activations on links", "f32"},
        {"--parallel", "-np", true, "N", "sequence slots (concurrent sequences)", "1"},
        {"--cache-type-k", "-ctk", true, "TYPE", "KV cache type for K: f32, f16, q8_0", "f32"},
        {"--cache-type-v", "-ctv", true, "TYPE", "KV cache type for V: f32, f16, q8_0", "f32"},
        {"--act-quant", "", true, "auto|none|q8",
         "CPU matmuls on quantized weights: q8 = activations rounded to int8 per 32 values for integer dot "
         "products (llama.cpp's scheme: faster, not exact), none = f32 activations (exact); auto = q8 for "
         "quantized weights, exact for F32/F16/BF16",
         "auto"},
        {"--attn-precision", "", true, "f32|f16", "accumulation precision of attention on CUDA (f16 only to demonstrate the failure)", "arch default"},
        {"--no-check-finite", "", false, "", "skip the NaN/Inf check after every layer", ""},
        {"--verbose", "-v", false, "", "log debug lines too (plan, per-stage weights and KV, mapped tensors)", ""},
        {"--quiet", "-q", false, "", "log errors only (no plan, progress or speed lines)", ""},
    };
}

std::vector<FlagSpec> sampling_flags() {
    return {
        {"--temp", "", true, "T", "temperature (0 = greedy)", "0.8"},
        {"--top-k", "", true, "K", "top-k (0 = off)", "40"},
        {"--top-p", "", true, "P", "top-p (1 = off)", "0.95"},
        {"--min-p", "", true, "P", "min-p (0 = off)", "0.05"},
        {"--repeat-penalty", "", true, "X", "repetition penalty (1 = off)", "1.0"},
        {"--repeat-last-n", "", true, "N", "tokens considered by the repetition penalty", "64"},
        {"--seed", "-s", true, "N", "random seed (same seed, same tokens; -1 = random, printed)", "0"},
    };
}

std::vector<FlagSpec> concat(std::vector<FlagSpec> a, const std::vector<FlagSpec>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

}  // namespace pipelm::cli
