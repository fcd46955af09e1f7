// `pipelm chat`: a terminal chat over the pipeline, in every mode. Multi-turn history in the
// GLM-4 chat template; each reply streams as it is generated and reuses the KV rows the
// conversation already has in its slot (the scheduler's prefix reuse), so a turn computes only
// its new tokens. /reset clears the history, /exit (or end of input) quits, Ctrl-C stops a reply
// and not the program. Reads stdin when it is piped: one user message per line, replies on stdout.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/serve_api.h"
#include "launcher/session.h"
#include "launcher/signals.h"
#include "runtime/base/log.h"
#include "runtime/pipeline/scheduler.h"

namespace pipelm::launcher {
namespace {

std::string trim(const std::string& s) {
    const size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

struct Reply {
    std::string text;
    bool stopped = false;  // by Ctrl-C
};

struct ChatSettings {
    std::string system;
    sampling::SamplerParams sampler;
    int n_predict = 512;
    int n_ctx = 0;
    bool ignore_eos = false;
};

// Generates one reply, printing it as it comes; Ctrl-C cancels it (the slot is freed at the next
// step and the history keeps what was printed).
Reply generate(pipeline::Scheduler& sch, const tok::Tokenizer& tk, pipeline::GenRequest req) {
    Reply r;
    auto seq = sch.submit(std::move(req));
    serve::TextStream text(tk, {}, /*strip_first_newline=*/true);
    auto print = [&r](const std::string& s) {
        r.text += s;
        std::fputs(s.c_str(), stdout);
        std::fflush(stdout);
    };
    for (;;) {
        if (interrupted() && !seq->cancelled()) {
            seq->cancel();
            r.stopped = true;
        }
        pipeline::SeqUpdate u;
        if (!seq->wait(&u, std::chrono::milliseconds(0))) {
            sch.step(std::chrono::milliseconds(10));
            continue;
        }
        for (int32_t t : u.tokens) print(text.push(t));
        if (u.finish == pipeline::Finish::kError) PIPELM_THROW(ErrorCode::kProtocol, "chat: the pipeline failed: ", u.error);
        if (u.finish != pipeline::Finish::kNone) break;
    }
    print(text.finish());
    return r;
}

// The conversation loop: reads messages until /exit or the end of input.
void converse(pipeline::Scheduler& sch, const tok::Tokenizer& tk, const ChatSettings& cs) {
    const bool tty = ::isatty(0) != 0;
    std::vector<tok::ChatMessage> history;
    if (!cs.system.empty()) history.push_back({"system", cs.system});
    const size_t base = history.size();
    if (tty) std::fputs("pipelm chat: /reset clears the conversation, /exit quits, Ctrl-C stops a reply\n", stderr);
    for (;;) {
        if (tty) {
            std::fputs("> ", stdout);
            std::fflush(stdout);
        }
        std::string line;
        if (!std::getline(std::cin, line)) {
            if (!interrupted()) return;  // end of input
            clear_interrupt();           // Ctrl-C at the prompt: a new prompt
            std::cin.clear();
            std::clearerr(stdin);
            std::fputs("\n(/exit or Ctrl-D quits)\n", stderr);
            continue;
        }
        line = trim(line);
        if (line.empty()) continue;
        if (line == "/exit" || line == "/quit") return;
        if (line == "/reset") {
            history.resize(base);
            if (tty) std::fputs("(conversation cleared)\n", stderr);
            continue;
        }
        if (line[0] == '/') {
            std::fprintf(stderr, "unknown command %s: use /reset or /exit\n", line.c_str());
            continue;
        }
        history.push_back({"user", line});
        pipeline::GenRequest req;
        req.prompt = tk.encode(tok::apply_chat_template(history, true), /*parse_special=*/true);
        req.sampler = cs.sampler;
        req.ignore_eos = cs.ignore_eos;
        const int n_prompt = static_cast<int>(req.prompt.size());
        if (n_prompt >= cs.n_ctx) {
            std::fprintf(stderr, "error: the conversation has %d tokens and the context holds %d: /reset or raise --ctx\n",
                         n_prompt, cs.n_ctx);
            history.pop_back();
            continue;
        }
        req.max_tokens = std::min(cs.n_predict, cs.n_ctx - n_prompt);
        const Reply r = generate(sch, tk, std::move(req));
        std::fputs("\n", stdout);
        std::fflush(stdout);
        if (r.stopped) {
            clear_interrupt();
            std::fputs("[stopped]\n", stderr);
        }
        history.push_back({"assistant", r.text});
    }
}

}  // namespace

int cmd_chat(int argc, char** argv) {
    auto flags = cli::concat(cli::pipeline_flags(), cli::sampling_flags());
    flags = cli::concat(flags, {
        {"--system", "", true, "TEXT", "system message at the start of the conversation", ""},
        {"--n-predict", "-n", true, "N", "most tokens per reply", "512"},
        {"--ignore-eos", "", false, "", "generate exactly -n tokens per reply (for tests and benchmarks)", ""},
    });
    cli::Args a("chat", flags);
    if (!a.parse(argc, argv, 2,
                 "Interactive chat in the terminal (GLM-4 chat template, multi-turn). Type a message and Enter;\n"
                 "/reset clears the conversation, /exit or Ctrl-D quits, Ctrl-C stops a reply. With stdin piped, each\n"
                 "line is a message and the replies go to stdout, one per line. Without -m: the embedded glm4-demo\n"
                 "model over 2 stages (it knows Moby-Dick, not chatting)."))
        return 0;
    SessionOptions o = SessionOptions::from_args(a);
    if (o.model_path.empty()) {
        o.model_path = default_model_path();
        if (o.n_stages_from.empty() && o.workers.empty()) o.n_stages = 2;
    }
    ChatSettings cs;
    cs.system = a.str("--system");
    cs.n_predict = static_cast<int>(a.integer("--n-predict"));
    cs.ignore_eos = a.flag("--ignore-eos");
    if (cs.n_predict < 1) PIPELM_THROW(ErrorCode::kInvalidArgument, "--n-predict must be at least 1");
    cs.sampler = cli::sampler_params(a);

    auto session = Session::open(o);
    if (!session->is_coordinator()) return 0;
    const tok::Tokenizer& tk = session->tokenizer();
    cs.n_ctx = session->n_ctx();
    pipeline::SchedulerOptions so;
    so.n_slots = 1;
    so.ubatch = o.ubatch;
    so.n_ctx = cs.n_ctx;
    so.max_queue = 0;
    so.eog = tk.eog_ids();
    pipeline::Scheduler sch(session->engine(), so);
    converse(sch, tk, cs);
    sch.close();
    while (sch.step(std::chrono::milliseconds(0))) {
    }
    session->close();
    return 0;
}

}  // namespace pipelm::launcher
