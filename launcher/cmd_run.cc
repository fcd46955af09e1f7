// Inference commands: run (generate text), logits (dump logits), perplexity (PPL and KLD).
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "launcher/session_net.h"
#include "launcher/signals.h"
#include "runtime/base/log.h"
#include "runtime/pipeline/trace.h"

namespace pipelm::launcher {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string read_file(const std::string& path, const char* flag) {
    std::ifstream in(path, std::ios::binary);
    if (!in) PIPELM_THROW(ErrorCode::kIo, flag, " ", path, ": cannot read the file");
    return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<int32_t> parse_ids(const std::string& text, const char* flag) {
    std::vector<int32_t> ids;
    std::string cur;
    bool after_comma = true;  // a comma must follow an id: "1,,2" and ",1" have an empty entry
    auto flush = [&] {
        if (cur.empty()) return;
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(cur.c_str(), &end, 10);
        if (*end != '\0' || errno == ERANGE || v < 0 || v > INT32_MAX)
            PIPELM_THROW(ErrorCode::kInvalidArgument, flag, ": '", cur, "' is not a token id");
        ids.push_back(static_cast<int32_t>(v));
        cur.clear();
        after_comma = false;
    };
    for (char c : text) {
        if ((c >= '0' && c <= '9') || c == '-') {
            cur += c;
        } else if (c == ',') {
            flush();
            if (after_comma)
                PIPELM_THROW(ErrorCode::kInvalidArgument, flag, ": an empty entry between commas (expected ids like 1,2,3)");
            after_comma = true;
        } else if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '[' || c == ']') {
            flush();
        } else {
            PIPELM_THROW(ErrorCode::kInvalidArgument, flag, ": unexpected character '", c, "' (expected ids like 1,2,3)");
        }
    }
    flush();
    if (after_comma && !ids.empty())
        PIPELM_THROW(ErrorCode::kInvalidArgument, flag, ": the list ends with a comma (expected ids like 1,2,3)");
    return ids;
}

std::string busy_line(const pipeline::PipelineStats& st, double wall) {
    std::ostringstream os;
    char buf[64];
    for (size_t s = 0; s < st.busy_s.size(); ++s) {
        std::snprintf(buf, sizeof buf, "%s%.0f%%", s ? " " : "", wall > 0 ? 100.0 * st.busy_s[s] / wall : 0.0);
        os << buf;
    }
    return os.str();
}

}  // namespace

int cmd_run(int argc, char** argv) {
    auto flags = cli::concat(cli::pipeline_flags(), cli::sampling_flags());
    flags = cli::concat(flags, {
        {"--prompt", "-p", true, "TEXT", "prompt (special tokens like [gMASK]<sop> are parsed)", ""},
        {"--file", "-f", true, "FILE", "read the prompt from a file", ""},
        {"--n-predict", "-n", true, "N", "tokens to generate", "128"},
        {"--chat", "", false, "", "wrap the prompt in the model's chat template (GLM-4-0414 format)", ""},
        {"--system", "", true, "TEXT", "system message for --chat", ""},
        {"--ignore-eos", "", false, "", "generate exactly -n tokens (for benchmarks)", ""},
        {"--tokens", "", true, "IDS", "prompt as token ids (e.g. 658,660,663) instead of text", ""},
        {"--print-ids", "", false, "", "print the generated token ids as a JSON array instead of text", ""},
        {"--trace", "", true, "FILE.json", "write a Chrome trace (Perfetto) of the ubatches: a track per stage and per link", ""},
    });
    cli::Args a("run", flags);
    if (!a.parse(argc, argv, 2,
                 "Generates text. Without -m it runs the embedded glm4-demo model (4 M parameters, trained on\n"
                 "Moby-Dick and State of the Union addresses) over 2 in-process stages."))
        return 0;
    SessionOptions o = SessionOptions::from_args(a);
    const bool demo = o.model_path.empty();
    std::string prompt = a.str("--prompt");
    if (demo) {
        o.model_path = default_model_path();
        if (o.n_stages_from.empty() && o.workers.empty()) o.n_stages = 2;
        if (prompt.empty() && !a.has("--file")) prompt = "[gMASK]<sop>The whale";
    }
    // Read before the model is loaded (a wrong path fails at once); under mpirun by rank 0 alone,
    // which alone uses the prompt, so that a missing file is reported once.
    if (a.has("--file") && net::mpi_world_from_env().second == 0) prompt = read_file(a.str("--file"), "--file");
    pipeline::Trace trace;  // before the session: the engine holds a pointer to it
    auto session = Session::open(o);
    if (!session->is_coordinator()) return 0;
    const tok::Tokenizer& tk = session->tokenizer();
    if (demo) PIPELM_INFO("model: embedded glm4-demo (", session->config().summary(), ")");
    std::vector<int32_t> ids;
    if (a.has("--tokens")) {
        ids = parse_ids(a.str("--tokens"), "--tokens");
    } else if (a.flag("--chat")) {
        std::vector<tok::ChatMessage> msgs;
        if (a.has("--system")) msgs.push_back({"system", a.str("--system")});
        msgs.push_back({"user", prompt});
        ids = tk.encode(tok::apply_chat_template(msgs, true), true);
    } else {
        if (prompt.empty()) PIPELM_THROW(ErrorCode::kInvalidArgument, "run: give a prompt with -p TEXT or -f FILE");
        ids = tk.encode(prompt, true);
    }
    if (ids.empty()) PIPELM_THROW(ErrorCode::kInvalidArgument, "run: the prompt has no tokens");
    const int n_predict = static_cast<int>(a.integer("--n-predict"));
    if (static_cast<int>(ids.size()) + n_predict > session->n_ctx())
        PIPELM_THROW(ErrorCode::kInvalidArgument, "prompt (", ids.size(), " tokens) + -n ", n_predict,
                     " exceed the context of ", session->n_ctx(), ": raise --ctx or lower -n");
    const bool ignore_eos = a.flag("--ignore-eos");
    pipeline::Engine& eng = session->engine();
    const auto sp = cli::sampler_params(a);
    eng.start_seq(0, sp, ids);
    const bool print_ids = a.flag("--print-ids");
    if (demo && !a.has("--prompt") && !a.has("--file") && !print_ids) {
        std::fputs(prompt.substr(std::strlen("[gMASK]<sop>")).c_str(), stdout);
        std::fflush(stdout);
    }
    std::vector<int32_t> generated;
    if (a.has("--trace")) eng.set_trace(&trace);
    eng.reset_stats();
    const auto t0 = Clock::now();
    int32_t tok = eng.prefill_sample(0, ids, 0);
    const double t_prompt = since(t0);
    tok::StreamDecoder dec(tk);
    int n_gen = 0;
    const auto t1 = Clock::now();
    int pos = static_cast<int>(ids.size());
    while (n_gen < n_predict) {
        if (interrupted()) {
            PIPELM_WARN("interrupted: stopping generation and shutting the pipeline down");
            break;
        }
        ++n_gen;
        if (!ignore_eos && tk.is_eog(tok)) break;
        generated.push_back(tok);
        if (!print_ids) {
            std::fputs(dec.push(tok).c_str(), stdout);
            std::fflush(stdout);
        }
        if (n_gen == n_predict) break;
        tok = eng.decode_sample(0, tok, pos++);
    }
    if (print_ids) {
        std::string out = "[";
        for (size_t i = 0; i < generated.size(); ++i) out += (i ? ", " : "") + std::to_string(generated[i]);
        std::fputs((out + "]").c_str(), stdout);
    } else {
        std::fputs(dec.finish().c_str(), stdout);
    }
    std::fputs("\n", stdout);
    std::fflush(stdout);
    const double t_gen = since(t1), wall = since(t0);
    char buf[256];
    std::snprintf(buf, sizeof buf, "prompt %zu tokens %.1f t/s | generated %d tokens %.1f t/s | %d stage(s), %s, busy %s",
                  ids.size(), ids.size() / std::max(t_prompt, 1e-9), n_gen, (n_gen - 1) / std::max(t_gen, 1e-9),
                  eng.n_stages(), mode_name(session->mode()), busy_line(eng.stats(), wall).c_str());
    PIPELM_INFO(buf);
    for (const auto& line : pipeline::recovery_lines(eng.recoveries())) PIPELM_INFO(line);
    if (a.has("--trace")) trace.write(a.str("--trace"));
    session->close();
    return interrupted() ? 130 : 0;
}

int cmd_logits(int argc, char** argv) {
    auto flags = cli::concat(cli::pipeline_flags(), {
        {"--tokens", "", true, "IDS", "token ids, e.g. 1,2,3", ""},
        {"--tokens-file", "", true, "FILE", "token ids (JSON array or separated by commas/whitespace)", ""},
        {"--prompt", "-p", true, "TEXT", "text to tokenize instead (special tokens parsed)", ""},
        {"--out", "-o", true, "FILE", "output: raw little-endian float32 [n_tokens][n_vocab]", ""},
        {"--trace", "", true, "FILE.json", "write a Chrome trace (Perfetto) of the ubatches: a track per stage and per link", ""},
    });
    cli::Args a("logits", flags);
    if (!a.parse(argc, argv, 2, "Evaluates a token list in one pass (in --ubatch chunks) and writes the logits of every position."))
        return 0;
    SessionOptions o = SessionOptions::from_args(a);
    if (!a.has("--out")) PIPELM_THROW(ErrorCode::kInvalidArgument, "logits: pass --out FILE");
    pipeline::Trace trace;
    auto session = Session::open(o);
    if (!session->is_coordinator()) return 0;
    std::vector<int32_t> ids;
    if (a.has("--tokens")) ids = parse_ids(a.str("--tokens"), "--tokens");
    else if (a.has("--tokens-file")) ids = parse_ids(read_file(a.str("--tokens-file"), "--tokens-file"), "--tokens-file");
    else if (a.has("--prompt")) ids = session->tokenizer().encode(a.str("--prompt"), true);
    else PIPELM_THROW(ErrorCode::kInvalidArgument, "logits: give --tokens, --tokens-file or --prompt");
    if (ids.empty()) PIPELM_THROW(ErrorCode::kInvalidArgument, "logits: no tokens");
    if (static_cast<int>(ids.size()) > session->n_ctx())
        PIPELM_THROW(ErrorCode::kInvalidArgument, ids.size(), " tokens exceed the context of ", session->n_ctx(), ": raise --ctx");
    if (a.has("--trace")) session->engine().set_trace(&trace);
    auto logits = session->engine().prefill_logits(0, ids, 0, true);
    if (a.has("--trace")) trace.write(a.str("--trace"));
    const std::string out = a.str("--out");
    std::ofstream f(out, std::ios::binary);
    if (!f) PIPELM_THROW(ErrorCode::kIo, "--out ", out, ": cannot create the file");
    f.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * 4));
    if (!f) PIPELM_THROW(ErrorCode::kIo, "--out ", out, ": write failed");
    PIPELM_INFO("wrote ", ids.size(), " x ", session->config().n_vocab, " logits to ", out);
    session->close();
    return 0;
}

}  // namespace pipelm::launcher
