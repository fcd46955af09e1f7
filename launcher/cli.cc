#include "launcher/cli.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "runtime/base/error.h"

namespace pipelm::cli {
namespace {

// --threads: each is an OS thread with its own stack; far more than any host has cores is a typo.
constexpr int64_t kMaxThreads = 1024;

}  // namespace

Args::Args(std::string command, std::vector<FlagSpec> specs) : command_(std::move(command)), specs_(std::move(specs)) {
    specs_.push_back({"--help", "-h", false, "", "show this help", ""});
}

const FlagSpec* Args::find(const std::string& arg) const {
    for (const auto& s : specs_)
        if (arg == s.name || (!s.alias.empty() && arg == s.alias)) return &s;
    return nullptr;
}

std::string Args::help(const std::string& summary) const {
    std::ostringstream os;
    os << "usage: pipelm " << command_ << " [flags]\n\n" << summary << "\n\nflags:\n";
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

bool Args::parse(int argc, char** argv, int first, const std::string& summary) {
    for (int i = first; i < argc; ++i) {
        std::string a = argv[i];
        std::string value;
        bool has_inline = false;
        const size_t eq = a.find('=');
        if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = a.substr(eq + 1);
            a = a.substr(0, eq);
            has_inline = true;
        }
        const FlagSpec* s = find(a);
        if (!s)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "unknown flag '", a, "' for `pipelm ", command_,
                         "` (see `pipelm ", command_, " --help`)");
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
            values_[s->name] = value;
            if (s->name == "--threads") check_threads();
        } else {
            if (has_inline) PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", s->name, " takes no value");
            values_[s->name] = "1";
        }
    }
    return true;
}

void Args::check_threads() const {
    const int64_t n = integer("--threads");
    if (n < 1 || n > kMaxThreads)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flag --threads of `pipelm ", command_, "`: ", n,
                     " is out of range: give 1 to ", kMaxThreads, " (this host has ",
                     std::thread::hardware_concurrency(), " cores)");
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
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0')
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", name, " of `pipelm ", command_, "`: '", v, "' is not an integer");
    return x;
}

double Args::number(const std::string& name) const {
    const std::string v = str(name);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0')
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", name, " of `pipelm ", command_, "`: '", v, "' is not a number");
    return x;
}

std::vector<FlagSpec> pipeline_flags() {
    return {
        {"--model", "-m", true, "FILE|DIR", "GGUF file, or Hugging Face folder (config.json, *.safetensors, tokenizer.json)", ""},
        {"--threads", "-t", true, "N", "compute threads per stage (per rank under mpirun)", "all cores / stages"},
        {"--ctx", "-c", true, "N", "context length (KV cache rows per sequence)", "model's, at most 4096"},
        {"--ubatch", "-ub", true, "N", "tokens per ubatch flowing through the stages", "64"},
        {"--stages", "", true, "N", "in-process pipeline stages (threads in this process)", "1"},
        {"--split", "", true, "auto|mem|a,b,..", "layers per stage: balanced, memory-proportional or explicit counts", "auto"},
        {"--mem", "", true, "SIZES", "memory budget per stage, e.g. 8G,8G (plans that do not fit are refused)", ""},
        {"--devices", "", true, "LIST", "device per stage: cpu or cuda:N (e.g. cuda:0,cpu)", "cpu"},
        {"--workers", "", true, "H:P,..", "TCP mode: worker addresses for stages 1..N-1 (this process is stage 0)", ""},
        {"--standby", "", true, "H:P,..", "TCP mode: spare workers; a lost stage is given to the next one and the job goes on", ""},
        {"--token-file", "", true, "FILE", "TCP mode: file with the shared secret token", ""},
        {"--connect-timeout", "", true, "SEC", "TCP mode: how long to retry reaching workers", "30"},
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
        {"--verbose", "-v", false, "", "more log output", ""},
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
        {"--seed", "-s", true, "N", "random seed (same seed, same tokens)", "0"},
    };
}

std::vector<FlagSpec> concat(std::vector<FlagSpec> a, const std::vector<FlagSpec>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

}  // namespace pipelm::cli
