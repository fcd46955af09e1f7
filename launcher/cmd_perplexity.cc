// pipelm perplexity: PPL over non-overlapping windows (glm4-demo README method, as
// llama-perplexity), and KL divergence / top-1 agreement against a saved base run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "launcher/signals.h"
#include "runtime/base/log.h"

namespace pipelm::launcher {
namespace {

constexpr uint32_t kLogitsMagic = 0x4c50504c;  // "LPPL"

// log-softmax of one row in double.
void log_softmax(const float* x, int n, std::vector<double>& out) {
    out.resize(n);
    double mx = x[0];
    for (int i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
    const double lse = mx + std::log(sum);
    for (int i = 0; i < n; ++i) out[i] = static_cast<double>(x[i]) - lse;
}

}  // namespace

int cmd_perplexity(int argc, char** argv) {
    auto flags = cli::pipeline_flags();
    for (auto& f : flags)
        if (f.name == "--ctx") f = {"--ctx", "-c", true, "N", "window length (tokens per evaluated window)", "256"};
    flags = cli::concat(flags, {
        {"--file", "-f", true, "FILE", "text to score (tokenized without special tokens, no BOS)", ""},
        {"--chunks", "", true, "N", "score only the first N windows", "all"},
        {"--save-logits", "", true, "FILE", "save this run's log-probabilities as the base for --kl-base", ""},
        {"--kl-base", "", true, "FILE", "compare with a saved base run: KL divergence, 99th percentile, top-1 agreement", ""},
    });
    cli::Args a("perplexity", flags);
    if (!a.parse(argc, argv, 2,
                 "Perplexity over non-overlapping windows of --ctx tokens from the start of the text; each window\n"
                 "is evaluated on its own (positions 0..ctx-1) and its first token is not scored.\n"
                 "PPL = exp(mean NLL), stderr = PPL * sqrt(var(NLL)/(N-1)) as llama-perplexity."))
        return 0;
    SessionOptions o = SessionOptions::from_args(a);
    const int win = a.has("--ctx") ? static_cast<int>(a.integer("--ctx")) : 256;
    if (win < 2) PIPELM_THROW(ErrorCode::kInvalidArgument, "--ctx must be at least 2");
    o.n_ctx = win;
    if (!a.has("--file")) PIPELM_THROW(ErrorCode::kInvalidArgument, "perplexity: pass -f TEXT_FILE");
    auto session = Session::open(o);
    if (!session->is_coordinator()) return 0;
    std::ifstream in(a.str("--file"), std::ios::binary);
    if (!in) PIPELM_THROW(ErrorCode::kIo, "-f ", a.str("--file"), ": cannot read the file");
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    const std::vector<int32_t> ids = session->tokenizer().encode(text, false);
    int64_t n_windows = static_cast<int64_t>(ids.size()) / win;
    if (a.has("--chunks")) n_windows = std::min<int64_t>(n_windows, a.integer("--chunks"));
    if (n_windows < 1)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "the text has ", ids.size(), " tokens, fewer than one window of ", win);
    const int V = session->config().n_vocab;
    PIPELM_INFO("perplexity: ", ids.size(), " tokens, ", n_windows, " windows of ", win, ", ",
                n_windows * (win - 1), " scored");

    std::ofstream save;
    if (a.has("--save-logits")) {
        save.open(a.str("--save-logits"), std::ios::binary);
        if (!save) PIPELM_THROW(ErrorCode::kIo, "--save-logits ", a.str("--save-logits"), ": cannot create");
        const uint32_t hdr[4] = {kLogitsMagic, static_cast<uint32_t>(V), static_cast<uint32_t>(n_windows), static_cast<uint32_t>(win)};
        save.write(reinterpret_cast<const char*>(hdr), sizeof hdr);
    }
    std::ifstream base;
    if (a.has("--kl-base")) {
        base.open(a.str("--kl-base"), std::ios::binary);
        if (!base) PIPELM_THROW(ErrorCode::kIo, "--kl-base ", a.str("--kl-base"), ": cannot read");
        uint32_t hdr[4] = {0, 0, 0, 0};
        base.read(reinterpret_cast<char*>(hdr), sizeof hdr);
        if (!base || hdr[0] != kLogitsMagic)
            PIPELM_THROW(ErrorCode::kFormat, "--kl-base ", a.str("--kl-base"), ": not a file written by --save-logits");
        if (hdr[1] != static_cast<uint32_t>(V) || hdr[3] != static_cast<uint32_t>(win) || hdr[2] < n_windows)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--kl-base ", a.str("--kl-base"), " was saved with vocab ", hdr[1],
                         ", ", hdr[2], " windows of ", hdr[3], "; this run has vocab ", V, ", ", n_windows,
                         " windows of ", win, ": use the same text, --ctx and --chunks");
    }

    std::vector<double> nll, kld;
    int64_t top1_same = 0;
    std::vector<double> lp, lp_base;
    std::vector<float> base_row(V);
    std::vector<float> lp_f(V);
    pipeline::Engine& eng = session->engine();
    const auto t_start = std::chrono::steady_clock::now();
    // llama-perplexity's timing: seconds per pass (window) so far and the time left at that rate.
    auto timing = [&](int64_t done) {
        const double per_pass =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count() / std::max<int64_t>(1, done);
        char buf[96];
        std::snprintf(buf, sizeof buf, "%.2f seconds per pass - ETA %.2f minutes", per_pass,
                      per_pass * static_cast<double>(n_windows - done) / 60.0);
        return std::string(buf);
    };
    for (int64_t w = 0; w < n_windows; ++w) {
        if (interrupted()) {
            PIPELM_WARN("interrupted after ", w, " windows");
            n_windows = w;
            break;
        }
        std::vector<int32_t> window(ids.begin() + w * win, ids.begin() + (w + 1) * win);
        const std::vector<float> logits = eng.prefill_logits(0, window, 0, true);
        for (int i = 0; i < win - 1; ++i) {
            log_softmax(logits.data() + static_cast<int64_t>(i) * V, V, lp);
            nll.push_back(-lp[window[i + 1]]);
            if (save.is_open()) {
                for (int v = 0; v < V; ++v) lp_f[v] = static_cast<float>(lp[v]);
                save.write(reinterpret_cast<const char*>(lp_f.data()), static_cast<std::streamsize>(V) * 4);
            }
            if (base.is_open()) {
                base.read(reinterpret_cast<char*>(base_row.data()), static_cast<std::streamsize>(V) * 4);
                if (!base) PIPELM_THROW(ErrorCode::kFormat, "--kl-base ", a.str("--kl-base"), ": file is truncated");
                double k = 0;
                int am_b = 0, am = 0;
                for (int v = 0; v < V; ++v) {
                    const double pb = base_row[v];
                    k += std::exp(pb) * (pb - lp[v]);
                    if (base_row[v] > base_row[am_b]) am_b = v;
                    if (lp[v] > lp[am]) am = v;
                }
                kld.push_back(k);
                top1_same += am == am_b;
            }
        }
        if (w == 0) PIPELM_INFO("perplexity: ", timing(1));
        if ((w + 1) % 20 == 0 || w + 1 == n_windows) {
            double m = 0;
            for (double x : nll) m += x;
            char buf[64];
            std::snprintf(buf, sizeof buf, "[%lld/%lld] ppl %.4f, ", (long long)(w + 1), (long long)n_windows,
                          std::exp(m / nll.size()));
            PIPELM_INFO(buf, timing(w + 1));
        }
    }
    if (nll.size() < 2) {
        session->close();
        return 130;
    }
    const double N = static_cast<double>(nll.size());
    double mean = 0, var = 0;
    for (double x : nll) mean += x;
    mean /= N;
    for (double x : nll) var += (x - mean) * (x - mean);
    var /= N;
    const double ppl = std::exp(mean);
    const double se = ppl * std::sqrt(var / (N - 1));
    std::printf("perplexity: %.4f +/- %.4f  (mean NLL %.6f nats over %.0f tokens, %lld windows of %d)\n", ppl, se, mean, N,
                (long long)n_windows, win);
    std::printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, se);  // llama-perplexity's last line
    if (!kld.empty()) {
        double km = 0, kv = 0;
        for (double x : kld) km += x;
        km /= kld.size();
        for (double x : kld) kv += (x - km) * (x - km);
        kv /= kld.size();
        std::vector<double> sorted = kld;
        std::sort(sorted.begin(), sorted.end());
        const double p99 = sorted[static_cast<size_t>(std::min<double>(sorted.size() - 1, std::floor(0.99 * (sorted.size() - 1) + 0.5)))];
        const double med = sorted[sorted.size() / 2];
        const double top1 = static_cast<double>(top1_same) / kld.size();
        std::printf("KL divergence: mean %.6e +/- %.1e, median %.6e, 99th pct %.6e, max %.6e\n", km,
                    std::sqrt(kv / (kld.size() - 1)), med, p99, sorted.back());
        std::printf("top-1 agreement: %.4f +/- %.4f\n", top1, std::sqrt(top1 * (1 - top1) / (kld.size() - 1)));
    }
    session->close();
    return interrupted() ? 130 : 0;  // a partial result (interrupted) is not a success
}

}  // namespace pipelm::launcher
