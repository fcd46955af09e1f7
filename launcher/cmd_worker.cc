// pipelm worker: serves pipeline stages over TCP for coordinators started with --workers.
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "launcher/session_net.h"

namespace pipelm::launcher {

int cmd_worker(int argc, char** argv) {
    cli::Args a("worker", {
        {"--listen", "", true, "HOST:PORT", "address to listen on (e.g. 0.0.0.0:7000; port 0 picks a free one)", ""},
        {"--token-file", "", true, "FILE",
         "file with the shared secret (mode 600); peers must prove they know it before anything else", ""},
        {"--model", "-m", true, "FILE[,FILE]",
         "the model(s) this worker serves; a job for another path is refused (a file of the same name "
         "stands for the coordinator's path)", ""},
        {"--threads", "-t", true, "N", "compute threads (default: the coordinator's --threads, else all cores)", ""},
        {"--once", "", false, "", "serve one job and exit (non-zero if it failed)", ""},
        {"--peer-timeout", "", true, "SEC", "silence (no data, no heartbeat) after which a coordinator or neighbour is lost", "10"},
    });
    if (!a.parse(argc, argv, 2,
                 "Waits for a coordinator (`pipelm run|logits|bench|perplexity --workers HOST:PORT,... --token-file F`),\n"
                 "receives its stage's layer range and serves it; then waits for the next job."))
        return 0;
    net::WorkerOptions o;
    o.listen = a.str("--listen");
    o.token_file = a.str("--token-file");
    o.models = net::split_models(a.str("--model"));
    o.threads = a.has("--threads") ? static_cast<int>(a.integer("--threads")) : 0;
    o.once = a.flag("--once");
    o.peer_timeout_s = a.number("--peer-timeout");
    return net::run_worker(o);
}

}  // namespace pipelm::launcher
