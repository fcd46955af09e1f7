// `pipelm bench`: llama-bench-like throughput of a pipeline. Tests: prompt processing (ppN: one
// N-token prompt in --ubatch chunks that overlap across stages), generation (tgN: N greedy
// single-token steps), both (ppN+tgM), multi-sequence decode (tgM@Kseq: K sequences in up to
// n_stages groups, one group per stage in flight), a sweep-bench table over the context, and a
// roofline check (measured read bandwidth vs the weight bytes each token reads). Every test runs
// once to warm up and then -r times; t/s is mean ± stddev over the runs. Per-stage busy % and the
// bubble come from the busy seconds each stage reports with every result. Value lists (-p, -n,
// --sequences, and in one process --stages and --ubatch) make a scaling sweep: one session per
// (stages, ubatch), every test on each. Tables, statistics and the bandwidth probe live in
// launcher/bench_{table,stats,bandwidth}.cc (launcher/bench.h).
#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "launcher/bench.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "launcher/session_net.h"
#include "kernels/matmul.h"
#include "runtime/base/log.h"
#include "runtime/pipeline/trace.h"
#include "runtime/model/tensors.h"

namespace pipelm::launcher {
namespace {

using bench::Bandwidth;
using bench::Cell;
using bench::Clock;
using bench::int_cell;
using bench::MeanSd;
using bench::num_cell;
using bench::Row;
using bench::since;
using bench::str_cell;

// ---- the tests --------------------------------------------------------------------------------

struct Run {
    double wall = 0;
    std::vector<double> busy;
    uint64_t link = 0;
    int64_t tokens = 0;  // tokens counted for t/s
    int64_t passes = 0;  // passes over all the weights (for the roofline)
    std::vector<double> ttft, itl;
};

// T_<x> s (mean seconds) and S_<x> t/s (mean ± sd over the repetitions) of a sweep row.
void add_rate(Row& row, const std::string& x, const std::vector<double>& t, const std::vector<double>& rate) {
    const MeanSd m = bench::mean_sd(rate);
    row.insert(row.end(), {{"t_" + x + "_s", num_cell(bench::mean_sd(t).mean, 3)},
                           {"s_" + x + "_tps", bench::mean_sd_cell(m.mean, m.sd, 2)},
                           {"s_" + x + "_tps_sd", num_cell(m.sd, 2)}});
}

struct Test {
    std::string name;
    std::function<void(Run&)> body;
    bool roofline = false;  // report the bandwidth fraction
    bool all_stages = false;  // all stages read weights at once (multi-sequence decode)
    bool latency = false;
};

class Bench {
public:
    Bench(pipeline::Engine& eng, int ubatch) : eng_(eng), ub_(ubatch) {
        greedy_.temperature = 0;
        greedy_.top_k = 0;
        greedy_.top_p = 1;
        greedy_.min_p = 0;
        greedy_.repeat_penalty = 1;
    }

    std::vector<int32_t> random_tokens(int n, uint64_t seed) const {
        sampling::Rng rng(seed);
        std::vector<int32_t> t(n);
        for (auto& x : t) x = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(eng_.n_vocab()));
        return t;
    }
    // Tokens each sequence of the last multi() run generated (--ids-out).
    const std::vector<std::vector<int32_t>>& ids() const { return ids_; }
    void start(int n_slots) {
        for (int s = 0; s < n_slots; ++s) eng_.start_seq(s, greedy_, {});
    }
    Run measure(const std::function<void(Run&)>& body) {
        Run r;
        eng_.reset_stats();
        const uint64_t lb0 = eng_.link_bytes();
        const auto t0 = Clock::now();
        body(r);
        r.wall = since(t0);
        r.busy = eng_.stats().busy_s;
        r.link = eng_.link_bytes() - lb0;
        return r;
    }

    void pp(Run& r, const std::vector<int32_t>& prompt) {
        eng_.prefill_sample(0, prompt, 0);
        r.tokens = static_cast<int64_t>(prompt.size());
    }
    void tg(Run& r, int32_t first, int n, int pos0) {
        int32_t tok = first;
        for (int i = 0; i < n; ++i) tok = eng_.decode_sample(0, tok, pos0 + i);
        r.tokens += n;
        r.passes += n;
    }

    // n_seq sequences in G = min(n_stages, n_seq) groups; a group's next step is submitted as
    // soon as its previous result is back, so up to G steps are in the pipe. Step 0 of a group
    // evaluates its sequences' prompts (prompt_len tokens each, in --ubatch chunks), every later
    // step one token per sequence; each step yields one token per sequence.
    void multi(Run& r, int n_seq, int n_gen, int prompt_len) {
        const int G = std::min(eng_.n_stages(), n_seq);
        struct Group {
            std::vector<int32_t> slots, last;
            int step = 0, pending = 0;
        };
        std::vector<Group> groups(G);
        std::vector<int> index(n_seq);
        for (int g = 0; g < G; ++g)
            for (int s = g * n_seq / G; s < (g + 1) * n_seq / G; ++s) {
                index[s] = static_cast<int>(groups[g].slots.size());
                groups[g].slots.push_back(s);
                groups[g].last.push_back(0);
            }
        ids_.assign(n_seq, {});
        std::deque<int> fifo;  // group of each ubatch in flight (results come in submission order)
        std::vector<double> last_t(n_seq, -1);
        const auto t0 = Clock::now();
        auto submit_step = [&](int g) {
            Group& gr = groups[g];
            std::vector<int32_t> tok, seq, pos, rows;
            if (gr.step == 0) {
                for (int32_t s : gr.slots) {
                    const auto p = random_tokens(prompt_len, 1000 + s);
                    for (int t = 0; t < prompt_len; ++t) tok.push_back(p[t]), seq.push_back(s), pos.push_back(t);
                }
            } else {
                tok = gr.last;
                seq = gr.slots;
                pos.assign(gr.slots.size(), prompt_len - 1 + gr.step);
            }
            const size_t chunk = gr.step == 0 ? static_cast<size_t>(ub_) : tok.size();
            for (size_t c0 = 0; c0 < tok.size(); c0 += chunk) {
                const size_t c1 = std::min(tok.size(), c0 + chunk);
                rows.clear();
                for (size_t i = c0; i < c1; ++i)
                    if (gr.step > 0 || pos[i] == prompt_len - 1) rows.push_back(static_cast<int32_t>(i - c0));
                eng_.submit({tok.begin() + c0, tok.begin() + c1}, {seq.begin() + c0, seq.begin() + c1},
                            {pos.begin() + c0, pos.begin() + c1}, rows, true, false);
                fifo.push_back(g);
                ++gr.pending;
                ++r.passes;
            }
            ++gr.step;
        };
        for (int g = 0; g < G; ++g) submit_step(g);
        while (eng_.in_flight() > 0) {
            pipeline::Result res = eng_.next_result();
            const int g = fifo.front();
            fifo.pop_front();
            const double t = since(t0);
            Group& gr = groups[g];
            PIPELM_CHECK(res.header.tokens.size() == res.header.seq.size(), "bench: result without sampled tokens");
            for (size_t i = 0; i < res.header.tokens.size(); ++i) {
                const int s = res.header.seq[i];
                (last_t[s] < 0 ? r.ttft : r.itl).push_back(last_t[s] < 0 ? t : t - last_t[s]);
                last_t[s] = t;
                gr.last[index[s]] = res.header.tokens[i];
                ids_[s].push_back(res.header.tokens[i]);
                ++r.tokens;
            }
            if (--gr.pending == 0 && gr.step < n_gen) submit_step(g);
        }
    }

    // sweep-bench: at each N_KV = 0, ub, 2ub, .. (while N_KV + ub + n_tg fits in n_ctx) a ubatch of
    // prompt at [N_KV, N_KV+ub), then n_tg generated tokens after it (overwritten by the next
    // repetition or row), `reps` times; one row per N_KV goes to `emit` as soon as it is measured,
    // with a progress line on stderr.
    void sweep(int n_ctx, int n_tg, int reps, const std::function<void(Row)>& emit) {
        start(1);
        eng_.prefill_sample(0, random_tokens(ub_, 42), 0);  // warm-up
        const int n_rows = n_ctx >= ub_ + n_tg ? (n_ctx - ub_ - n_tg) / ub_ + 1 : 0;
        for (int i = 0; i < n_rows; ++i) {
            const int n_kv = i * ub_;
            std::vector<double> t_pp, t_tg, s_pp, s_tg;
            for (int rep = 0; rep < reps; ++rep) {
                auto t0 = Clock::now();
                const int32_t tok = eng_.prefill_sample(0, random_tokens(ub_, 42 + n_kv), n_kv);
                t_pp.push_back(since(t0));
                s_pp.push_back(ub_ / t_pp.back());
                if (n_tg == 0) continue;
                t0 = Clock::now();
                Run r;
                tg(r, tok, n_tg, n_kv + ub_);
                t_tg.push_back(since(t0));
                s_tg.push_back(n_tg / t_tg.back());
            }
            Row row = {{"pp", int_cell(ub_)}, {"tg", int_cell(n_tg)}, {"n_kv", int_cell(n_kv)}};
            add_rate(row, "pp", t_pp, s_pp);
            if (n_tg > 0) add_rate(row, "tg", t_tg, s_tg);
            PIPELM_INFO(fmt::format("bench: sweep {}/{}: N_KV {}, S_PP {:.2f} t/s", i + 1, n_rows, n_kv, bench::mean_sd(s_pp).mean),
                        n_tg > 0 ? fmt::format(", S_TG {:.2f} t/s", bench::mean_sd(s_tg).mean) : "");
            emit(std::move(row));
        }
    }

private:
    pipeline::Engine& eng_;
    int ub_;
    sampling::SamplerParams greedy_;
    std::vector<std::vector<int32_t>> ids_;
};

// llama-bench's backend column: "CPU" without --devices, else the kinds named there ("CUDA",
// "CPU+CUDA" for --devices cpu,cuda:0).
std::string backend_label(const std::string& devices) {
    if (devices.empty()) return "CPU";
    std::vector<std::string> kinds;
    std::stringstream ss(devices);
    for (std::string d; std::getline(ss, d, ',');) {
        std::string k = d.substr(0, d.find(':'));
        for (char& c : k) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (!k.empty() && std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
    }
    std::string out;
    for (const auto& k : kinds) out += (out.empty() ? "" : "+") + k;
    return out.empty() ? "CPU" : out;
}

// One line of space-separated ids per sequence.
void write_ids(const std::string& path, const std::vector<std::vector<int32_t>>& ids) {
    std::ofstream f(path);
    for (const auto& seq : ids) {
        for (size_t i = 0; i < seq.size(); ++i) f << (i ? " " : "") << seq[i];
        f << "\n";
    }
    if (!f) PIPELM_THROW(ErrorCode::kIo, "--ids-out ", path, ": cannot write the file");
}

// One test on the session: a warm-up run, then `reps` measured runs; appends t/s (mean ± sd), busy %
// per stage, the bubble, link bytes, and with bw_threads > 0 the roofline fraction (read
// bandwidth with that many threads sampled around every run) and latency percentiles to `row`.
void measure_test(Bench& bench, const Test& t, int reps, int S, int bw_threads, uint64_t weight_bytes_per_pass, Row& row) {
    PIPELM_INFO("bench: ", t.name, " warm-up");
    bench.measure(t.body);
    std::vector<Run> runs;
    // Roofline tests: the read bandwidth is sampled before every repetition and after the
    // last, and each repetition is compared with the mean of the two samples around it. The
    // bandwidth of a shared machine drifts by +-20 % within seconds; a sample taken minutes
    // away (or the best of all samples) would mostly measure that drift.
    const bool roof = bw_threads > 0;
    std::vector<double> bw_samples;
    if (roof) bw_samples.push_back(bench::measure_bandwidth({bw_threads}, 3).gbs[bw_threads]);
    for (int i = 0; i < reps; ++i) {
        runs.push_back(bench.measure(t.body));
        if (roof) bw_samples.push_back(bench::measure_bandwidth({bw_threads}, 3).gbs[bw_threads]);
        PIPELM_INFO(fmt::format("bench: {} run {}/{}: {:.2f} t/s", t.name, i + 1, reps, runs.back().tokens / runs.back().wall));
    }
    std::vector<double> tps, frac, ttft, itl;
    std::vector<double> busy(S, 0.0);
    double wall = 0, link = 0;
    for (const Run& r : runs) {
        tps.push_back(r.tokens / r.wall);
        wall += r.wall;
        link += static_cast<double>(r.link) / reps;
        for (int s = 0; s < S && s < static_cast<int>(r.busy.size()); ++s) busy[s] += r.busy[s];
        ttft.insert(ttft.end(), r.ttft.begin(), r.ttft.end());
        itl.insert(itl.end(), r.itl.begin(), r.itl.end());
    }
    const bench::MeanSd m = bench::mean_sd(tps);
    row.insert(row.end(), {{"test", str_cell(t.name)},
                           {"tps", bench::mean_sd_cell(m.mean, m.sd, 2)},
                           {"tps_sd", num_cell(m.sd, 2)}});
    std::vector<double> busy_pct;
    double busy_sum = 0;
    for (int s = 0; s < S; ++s) {
        busy_pct.push_back(100 * busy[s] / wall);
        busy_sum += busy[s];
    }
    row.insert(row.end(), {{"busy_pct", bench::pct_list_cell(busy_pct)},
                           {"bubble_pct", num_cell(100 * (1 - busy_sum / (S * wall)), 1)},
                           {"link_mb", num_cell(link / 1e6, 2)}});
    if (roof) {
        for (size_t i = 0; i < runs.size(); ++i) {
            const double gbs = 0.5 * (bw_samples[i] + bw_samples[i + 1]);
            frac.push_back(static_cast<double>(weight_bytes_per_pass) * runs[i].passes / (gbs * 1e9) /
                           runs[i].wall);
            PIPELM_INFO(fmt::format("bench: {} run {}/{}: read bandwidth {:.2f} / {:.2f} GB/s before / after, roofline "
                                    "fraction {:.3f}", t.name, i + 1, reps, bw_samples[i], bw_samples[i + 1],
                            frac.back()));
        }
        const bench::MeanSd f = bench::mean_sd(frac);
        row.insert(row.end(), {{"bw_gbs", num_cell(bench::mean_sd(bw_samples).mean, 2)},
                               {"bw_frac", bench::mean_sd_cell(f.mean, f.sd, 3)},
                               {"bw_frac_sd", num_cell(f.sd, 3)}});
    }
    if (t.latency) {
        row.insert(row.end(), {{"ttft_ms_p50", num_cell(1e3 * bench::percentile(ttft, 0.5), 1)},
                               {"itl_ms_p50", num_cell(1e3 * bench::percentile(itl, 0.5), 1)},
                               {"itl_ms_p99", num_cell(1e3 * bench::percentile(itl, 0.99), 1)}});
    }
}

// What the flags ask for; the same on every rank of an mpirun job (it follows from argv alone).
struct BenchPlan {
    std::vector<int> prompts, gens, seqs, stages, ubatches;  // the value lists (-p -n --sequences --stages -ub)
    int reps = 3, seq_prompt = 1;
    bool pg = false, sweep = false, roofline = false;
    std::string out, link_rate, ids_out;
};

// Every test of the plan on one open session (coordinator only): rows are appended to `rows` and,
// for -o jsonl, printed the moment each one is measured.
void run_session(Session& session, const SessionOptions& o, const BenchPlan& p, const bench::Machine& mach,
                 std::vector<Row>& rows, pipeline::Trace* trace) {
    pipeline::Engine& eng = session.engine();
    if (trace) {
        trace->begin_group(std::to_string(eng.n_stages()) + " stage(s), ubatch " + std::to_string(o.ubatch), eng.n_stages());
        eng.set_trace(trace);
    }
    const int S = eng.n_stages();
    const int local_stages = session.mode() == Mode::kInProcess ? S : 1;
    int sharing = local_stages;  // stages on this host sharing its cores (as the session divides them)
    if (session.mode() == Mode::kMpi) sharing = net::local_ranks();
    const int threads = o.threads > 0 ? o.threads : default_threads(sharing);
    const bench::ModelInfo mi = bench::model_info(session.file(), session.config().tied_output);
    Bench bench(eng, eng.options().ubatch);
    const bool full = p.out != "md";  // machine-readable formats carry every parameter

    // Which CPU kernels ran (the run-time ISA choice of this process; every level gives the same
    // bits, only the speed differs) and the activation mode of the CPU matmuls.
    const std::string aq = o.act_quant.empty() ? "auto" : o.act_quant;
    PIPELM_INFO("bench: CPU kernels ", mach.cpu_isa, ", --act-quant ", aq, ", ", S, " stage(s), ubatch ", o.ubatch);
    Row base = {{"model", str_cell(mi.desc)}, {"size", int_cell(static_cast<int64_t>(mi.bytes), bench::size_label(mi.bytes))},
                {"params", int_cell(static_cast<int64_t>(mi.params), fmt::format("{:.2f} M", mi.params / 1e6))},
                {"backend", str_cell(backend_label(o.devices))}, {"stages", int_cell(S)},
                {"link", str_cell(mode_name(session.mode()))}, {"threads", int_cell(threads)},
                {"cpu_isa", str_cell(mach.cpu_isa)}, {"act_quant", str_cell(aq)}};
    if (!o.devices.empty()) base.insert(base.begin() + 4, {"devices", str_cell(o.devices)});
    if (p.ubatches.size() > 1 || full) base.push_back({"ubatch", int_cell(o.ubatch)});
    if (full) {
        base.insert(base.end(), {{"model_file", str_cell(mi.file)}, {"type", str_cell(mi.type)},
                                 {"cpu_model", str_cell(mach.cpu_model)}, {"cores", int_cell(mach.cores)},
                                 {"others_running", num_cell(mach.others_running, 1)},
                                 {"kernel", str_cell(mach.kernel)}, {"link_rate", str_cell(p.link_rate)},
                                 {"wire", str_cell(o.wire == pipeline::Wire::kBF16 ? "bf16" : "f32")},
                                 {"n_ctx", int_cell(session.n_ctx())}, {"reps", int_cell(p.reps)}});
    }
    auto emit = [&](Row row) {
        if (p.out == "jsonl") bench::print_jsonl(row);
        rows.push_back(std::move(row));
    };

    if (p.sweep) {
        const int n_tg = *std::max_element(p.gens.begin(), p.gens.end());
        bench.sweep(session.n_ctx(), n_tg, p.reps, [&](Row r) {
            r.insert(r.begin(), base.begin(), base.end());
            emit(std::move(r));
        });
        return;
    }

    Bandwidth bw;
    if (p.roofline) {
        bw = bench::measure_bandwidth({threads, threads * local_stages});
        PIPELM_INFO(fmt::format("roofline: read bandwidth {:.2f} GB/s with {} thread(s)", bw.gbs[threads], threads),
                    local_stages > 1 ? fmt::format(", {:.2f} GB/s with {}", bw.gbs[threads * local_stages], threads * local_stages) : "",
                    fmt::format(" (buffer {:.0f} MiB, LLC {:.0f} MiB); weights read per pass {:.1f} MiB", bw.buffer_bytes / 1048576.0,
                                bw.llc / 1048576.0, mi.weight_bytes_per_pass / 1048576.0));
        if (mi.weight_bytes_per_pass < 2 * bw.llc)
            PIPELM_WARN("roofline: the weights nearly fit in the last-level cache; fractions are not memory-bound figures");
    }

    struct Spec {
        Test test;
        int n_prompt, n_gen, n_seq;
    };
    std::vector<Spec> specs;
    const int max_prompt = *std::max_element(p.prompts.begin(), p.prompts.end());
    const auto prompt = bench.random_tokens(std::max(max_prompt, 1), 42);
    const int n_slots = p.seqs.empty() ? 1 : *std::max_element(p.seqs.begin(), p.seqs.end());
    for (const int np : p.prompts)
        if (np > 0) {
            const std::vector<int32_t> pr(prompt.begin(), prompt.begin() + np);
            specs.push_back({{"pp" + std::to_string(np), [&bench, pr](Run& r) { bench.pp(r, pr); }}, np, 0, 1});
        }
    for (const int ng : p.gens)
        if (ng > 0 && p.seqs.empty())
            specs.push_back({{"tg" + std::to_string(ng), [&bench, &prompt, ng](Run& r) { bench.tg(r, prompt[0], ng, 0); }, true},
                             0, ng, 1});
    for (const int np : p.pg ? p.prompts : std::vector<int>{})
        for (const int ng : p.gens)
            if (np > 0 && ng > 0) {
                const std::vector<int32_t> pr(prompt.begin(), prompt.begin() + np);
                specs.push_back({{"pp" + std::to_string(np) + "+tg" + std::to_string(ng), [&bench, &eng, pr, np, ng](Run& r) {
                                      const int32_t tok = eng.prefill_sample(0, pr, 0);
                                      bench.tg(r, tok, ng, np);
                                      r.tokens = np + ng;
                                  }},
                                 np, ng, 1});
            }
    for (const int ng : p.gens)
        for (const int k : ng > 0 ? p.seqs : std::vector<int>{})
            specs.push_back({{(p.seq_prompt > 1 ? "pp" + std::to_string(p.seq_prompt) + "+" : std::string()) + "tg" +
                                  std::to_string(ng) + "@" + std::to_string(k) + "seq",
                              [&bench, k, ng, sp = p.seq_prompt](Run& r) { bench.multi(r, k, ng, sp); },
                              p.seq_prompt == 1, std::min(S, k) > 1, true},
                             p.seq_prompt, ng, k});

    for (const Spec& sp : specs) {
        Row row = base;
        if (full)
            row.insert(row.end(), {{"n_prompt", int_cell(sp.n_prompt)}, {"n_gen", int_cell(sp.n_gen)}, {"n_seq", int_cell(sp.n_seq)}});
        const bool roof = !bw.gbs.empty() && sp.test.roofline;
        const int bw_threads = sp.test.all_stages ? threads * local_stages : threads;
        bench.start(n_slots);
        measure_test(bench, sp.test, p.reps, S, roof ? bw_threads : 0, mi.weight_bytes_per_pass, row);
        emit(row);
    }
    for (const auto& line : pipeline::recovery_lines(eng.recoveries())) PIPELM_INFO(line);
    if (!p.ids_out.empty()) write_ids(p.ids_out, bench.ids());
}

}  // namespace

int cmd_bench(int argc, char** argv) {
    auto flags = cli::concat(cli::pipeline_flags(), {
        {"--n-prompt", "-p", true, "N,..", "prompt tokens of the pp tests, one test per value (0 = no pp test)", "512"},
        {"--n-gen", "-n", true, "N,..", "generated tokens of the tg tests, one test per value (0 = no tg test)", "128"},
        {"--repetitions", "-r", true, "N", "measured runs per test (after one warm-up run)", "3"},
        {"--pg", "", false, "", "also run prompt + generation combined (ppP+tgN)", ""},
        {"--sequences", "", true, "N,..", "tg test with N concurrent sequences of -n tokens each (up to n_stages groups in flight) instead of one", ""},
        {"--seq-prompt", "", true, "N", "prompt tokens per sequence of the --sequences test (in its time)", "1"},
        {"--sweep", "", false, "", "instead of the tests: at each context depth N_KV = 0, ub, 2ub, .. up to --ctx (default -p + -n), a ubatch of prompt (PP) and then -n generated tokens (TG), each -r times (mean ± sd), a progress line per depth", ""},
        {"--roofline", "", false, "", "measure read bandwidth; report tg results as a fraction of the roofline", ""},
        {"--output", "-o", true, "md|csv|json|jsonl", "output format (jsonl: one row per line with every parameter and the machine, printed as each test finishes)", "md"},
        {"--trace", "", true, "FILE.json", "write a Chrome trace (Perfetto) of every ubatch: a track per stage and per link, a group per session", ""},
        {"--link-rate", "", true, "LABEL", "label of the link rate under test for the rows (e.g. 100mbit from hosts.sh --rate)", ""},
        {"--synthetic", "", true, "PRESET", "build the model in memory (not supported on CPU: use pipelm mkmodel)", ""},
        {"--ids-out", "", true, "FILE", "write the ids each sequence of the last --sequences run generated (a line each)", ""},
    });
    cli::Args a("bench", flags);
    std::map<std::string, std::string> lists;
    std::vector<std::string> args = bench::split_list_flags(argc, argv, lists);
    std::vector<char*> av;
    for (auto& s : args) av.push_back(s.data());
    if (!a.parse(static_cast<int>(av.size()), av.data(), 2,
                 "Measures prompt processing (ppN, in --ubatch chunks that overlap across stages), generation (tgN,\n"
                 "greedy, ignoring EOS), optionally both (--pg), concurrent sequences (--sequences) or a sweep over the\n"
                 "context (--sweep), with random prompt ids. One warm-up run, then -r runs: mean ± stddev t/s, busy %\n"
                 "of every stage, the bubble (1 - sum busy / (stages x wall)) and bytes on links per run.\n"
                 "Scaling sweeps: -p, -n, --sequences, and in one process --stages and --ubatch (-ub) take value\n"
                 "lists (-p 128,512 --stages 1,2,4 -ub 16,64); every combination is one row (-o jsonl: one line each)."))
        return 0;
    if (a.has("--synthetic"))
        PIPELM_THROW(ErrorCode::kUnsupported, "bench --synthetic ", a.str("--synthetic"),
                     ": in-memory synthetic models are not supported by the CPU backend; write one with `pipelm mkmodel "
                     "--preset ", a.str("--synthetic"), " -o FILE.gguf` and pass -m FILE.gguf");
    BenchPlan p;
    p.prompts = bench::int_list("--n-prompt", lists.count("--n-prompt") ? lists["--n-prompt"] : a.str("--n-prompt"), 0, 1 << 20);
    p.gens = bench::int_list("--n-gen", lists.count("--n-gen") ? lists["--n-gen"] : a.str("--n-gen"), 0, 1 << 20);
    if (a.has("--sequences"))
        p.seqs = bench::int_list("--sequences", lists.count("--sequences") ? lists["--sequences"] : a.str("--sequences"), 1, 4096);
    p.reps = static_cast<int>(a.integer("--repetitions"));
    p.seq_prompt = static_cast<int>(a.integer("--seq-prompt"));
    p.pg = a.flag("--pg");
    p.sweep = a.flag("--sweep");
    p.roofline = a.flag("--roofline");
    p.out = a.str("--output");
    p.link_rate = a.str("--link-rate");
    p.ids_out = a.str("--ids-out");
    if (p.out != "md" && p.out != "csv" && p.out != "json" && p.out != "jsonl")
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--output ", p.out, ": use md, csv, json or jsonl");
    if (p.reps < 1 || p.seq_prompt < 1)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "bench: -r and --seq-prompt must be >= 1");
    const int max_p = *std::max_element(p.prompts.begin(), p.prompts.end());
    const int max_n = *std::max_element(p.gens.begin(), p.gens.end());
    const int n_seqs = p.seqs.empty() ? 0 : *std::max_element(p.seqs.begin(), p.seqs.end());
    if (n_seqs > 0 && max_n == 0) PIPELM_THROW(ErrorCode::kInvalidArgument, "--sequences needs -n > 0");

    SessionOptions o = SessionOptions::from_args(a);
    p.stages = lists.count("--stages") ? bench::int_list("--stages", lists["--stages"], 1, 1024) : std::vector<int>{o.n_stages};
    p.ubatches = lists.count("--ubatch") ? bench::int_list("--ubatch", lists["--ubatch"], 1, 1 << 16) : std::vector<int>{o.ubatch};
    if ((p.stages.size() > 1 || p.ubatches.size() > 1) && (net::launched_by_mpirun() || !o.workers.empty()))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "bench: --stages and --ubatch lists need in-process stages (one session each); under "
                     "mpirun or with --workers the pipeline is fixed: run bench once per stage count / ubatch");
    if (p.stages.size() > 1 && o.split != "auto" && o.split != "mem")
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--split ", o.split, " fixes the stage count: use --split auto with a --stages list");
    const int user_ctx = o.n_ctx;
    bench::Machine mach = bench::machine();
    // The other ranks of this job on this host start as this one does: they are not other work.
    if (mach.others_running > 0 && net::launched_by_mpirun())
        mach.others_running = std::max(0.0, mach.others_running - (net::local_ranks() - 1));
    if (mach.others_running >= 0.5)
        PIPELM_WARN(fmt::format("bench: {:.1f} tasks of other processes were running on this machine's {} cores when bench "
                                "started: the numbers move with them (stop them, or alternate configurations over rounds "
                                "and compare ratios)", mach.others_running, mach.cores));
    std::vector<Row> rows;
    pipeline::Trace trace;  // outlives every session (their engines point to it)
    for (const int stages : p.stages)
        for (const int ub : p.ubatches) {
            o.n_stages = stages;
            o.ubatch = ub;
            // Context and slots follow from the flags alone, so every rank of an mpirun job agrees.
            int need = std::max({max_p, max_n, 1}), fill = need;
            if (p.pg) need = std::max(need, max_p + max_n);
            if (n_seqs > 0) need = std::max(need, p.seq_prompt + max_n);
            if (p.sweep) need = ub + max_n, fill = std::max(need, max_p + max_n);
            o.n_ctx = user_ctx;
            if (o.n_ctx == 0) o.n_ctx = std::max(need, fill);
            else if (o.n_ctx < need) PIPELM_THROW(ErrorCode::kInvalidArgument, "--ctx ", o.n_ctx, " is below the ", need, " tokens the tests need");
            o.n_seq = std::max(o.n_seq, n_seqs);
            auto session = Session::open(o);
            if (!session->is_coordinator()) return 0;
            run_session(*session, o, p, mach, rows, a.has("--trace") ? &trace : nullptr);
            session->close();
        }
    if (p.out != "jsonl") bench::print_table(rows, p.out);
    if (a.has("--trace")) trace.write(a.str("--trace"));
    return 0;
}

}  // namespace pipelm::launcher
