// `pipelm serve`: an OpenAI-compatible HTTP server over the pipeline, in every mode (in-process
// stages, mpirun with rank 0 serving, TCP workers), with every pipeline flag. Requests are batched
// continuously over the stages by pipeline::Scheduler; HTTP lives in serve_http.cc, the OpenAI
// request and answer formats in serve_api.cc.
#include <cstdlib>
#include <fstream>
#include <iterator>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/serve_http.h"
#include "launcher/session.h"
#include "launcher/session_net.h"
#include "launcher/signals.h"
#include "runtime/base/log.h"
#include "runtime/pipeline/scheduler.h"
#include "runtime/pipeline/trace.h"

namespace pipelm::launcher {
namespace {

// Under mpirun only rank 0, the coordinator, serves HTTP. Its rank is known from mpirun's
// environment before MPI starts, so that /health can answer while the model loads.
bool serves_http() {
    return net::mpi_world_from_env().second == 0;
}

std::string read_api_key(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) PIPELM_THROW(ErrorCode::kIo, "--api-key-file ", path, ": cannot read the file");
    std::string key((std::istreambuf_iterator<char>(in)), {});
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
    if (key.empty() || key.find_first_of(" \t\r\n") != std::string::npos)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--api-key-file ", path,
                     ": the file must hold one key without spaces (e.g. `openssl rand -hex 32 > ", path, "`)");
    return key;
}

std::string model_id_of(const std::string& path) {
    std::string name = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".gguf") == 0) name.resize(name.size() - 5);
    return name;
}

int positive(const cli::Args& a, const char* flag, int lo, int hi) {
    const int64_t v = a.integer(flag);
    if (v < lo || v > hi)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "flag ", flag, " of `pipelm serve`: ", v, " is out of range: give ",
                     lo, " to ", hi);
    return static_cast<int>(v);
}

}  // namespace

int cmd_serve(int argc, char** argv) {
    auto flags = cli::pipeline_flags();
    for (auto& f : flags)
        if (f.name == "--parallel") f.default_value = "4";
    flags = cli::concat(flags, {
        {"--host", "", true, "ADDR", "address to listen on (0.0.0.0: every interface)", "127.0.0.1"},
        {"--port", "", true, "N", "TCP port (0: a free port, printed at start)", "8080"},
        {"--api-key-file", "", true, "FILE", "require 'Authorization: Bearer KEY' on /v1/*, KEY read from FILE", ""},
        {"--queue-size", "", true, "N", "requests that wait when all --parallel slots are busy; more get 429", "64"},
        {"--max-body", "", true, "BYTES", "largest request body (larger ones get 413)", "1048576"},
        {"--alias", "", true, "NAME", "model id in /v1/models and in requests", "the file name without .gguf"},
        {"--http-threads", "", true, "N", "HTTP threads: connections served at once", "parallel + queue size + 8"},
        {"--max-in-flight", "", true, "N", "ubatches in the pipeline at once", "the number of stages"},
        {"--trace", "", true, "FILE.json", "write a Chrome trace (Perfetto) of every ubatch, a track per stage and per link, when the server stops (it grows with the ubatches: for a bounded session)", ""},
    });
    cli::Args a("serve", flags);
    if (!a.parse(argc, argv, 2,
                 "OpenAI-compatible HTTP server: POST /v1/chat/completions and /v1/completions (stream: true for\n"
                 "server-sent events), GET /v1/models, /health (503 while loading) and /metrics (Prometheus). Requests\n"
                 "share the pipeline by continuous batching over --parallel sequence slots. Without -m it serves the\n"
                 "embedded glm4-demo model. Works in every mode: --stages N, mpirun (rank 0 serves), --workers."))
        return 0;
    SessionOptions o = SessionOptions::from_args(a);
    if (o.model_path.empty()) o.model_path = default_model_path();
    const int queue = positive(a, "--queue-size", 0, 1 << 20);
    HttpOptions ho;
    ho.host = a.str("--host");
    ho.port = positive(a, "--port", 0, 65535);
    ho.max_body = static_cast<size_t>(positive(a, "--max-body", 1024, 1 << 30));
    ho.threads = a.has("--http-threads") ? positive(a, "--http-threads", 1, 4096) : std::min(4096, o.n_seq + queue + 8);
    ho.model_id = a.has("--alias") ? a.str("--alias") : model_id_of(o.model_path);
    if (a.has("--api-key-file")) ho.api_key = read_api_key(a.str("--api-key-file"));
    const int max_in_flight = a.has("--max-in-flight") ? positive(a, "--max-in-flight", 1, 1024) : 0;

#if defined(__GLIBC__)
    // The HTTP threads (parallel + queue size + 8 by default) each allocate a little per request.
    // glibc gives threads that contend for the malloc lock arenas of their own (up to 8 per core),
    // each keeping up to its trim threshold of freed memory, so the RSS of a busy server stepped
    // up by ~2 MB (6 % of glm4-demo's) whenever a burst of connections made new arenas. Two arenas
    // keep it flat; the per-request allocations are small next to a decode step.
    // MALLOC_ARENA_MAX in the environment still decides when set.
    if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
#endif
    std::unique_ptr<HttpServer> http;
    if (serves_http()) {
        http = std::make_unique<HttpServer>(ho);
        const int port = http->start();
        PIPELM_INFO("serve: listening on http://", ho.host, ":", port, " (loading the model)");
    }
    auto session = Session::open(o);
    if (!session->is_coordinator()) return 0;
    PIPELM_CHECK(http != nullptr, "serve: rank 0 has no HTTP server (mpirun's rank variables are unset)");
    const tok::Tokenizer& tk = session->tokenizer();
    pipeline::SchedulerOptions so;
    so.n_slots = o.n_seq;
    so.ubatch = o.ubatch;
    so.n_ctx = session->n_ctx();
    so.max_queue = queue;
    so.max_in_flight = max_in_flight;
    so.eog = tk.eog_ids();
    pipeline::Scheduler sch(session->engine(), so);
    pipeline::Trace trace;  // filled by the scheduler's thread (it takes the results)
    if (a.has("--trace")) session->engine().set_trace(&trace);
    http->ready(sch, tk, session->n_ctx());
    PIPELM_INFO("serve: ready: model '", ho.model_id, "' (", session->config().summary(), "), ",
                session->engine().n_stages(), " stage(s) ", mode_name(session->mode()), ", ", o.n_seq, " slots x ",
                session->n_ctx(), " tokens, queue ", queue, ", ubatch ", o.ubatch,
                ho.api_key.empty() ? "" : ", API key required");
    std::exception_ptr failure;
    try {
        sch.run([&] { return interrupted() || http->failed(); });
    } catch (...) {
        failure = std::current_exception();
    }
    http->stop();  // every sequence has ended: the handlers answer and return
    if (a.has("--trace")) {
        session->engine().set_trace(nullptr);
        trace.write(a.str("--trace"));
        PIPELM_INFO("serve: wrote the trace of ", trace.n_events(), " spans to ", a.str("--trace"));
    }
    if (failure) std::rethrow_exception(failure);
    if (!interrupted()) PIPELM_THROW(ErrorCode::kIo, "serve: the HTTP listener on ", ho.host, ":", ho.port, " stopped");
    PIPELM_INFO("serve: stopped by a signal; shutting the pipeline down");
    session->close();
    return 0;
}

}  // namespace pipelm::launcher
