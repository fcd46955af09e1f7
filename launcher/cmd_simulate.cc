// `pipelm simulate`: what a pipeline would do with S stages, a link rate and a workload, from the
// discrete-event model of runtime/pipeline/simulator.h, without running it. The compute model
// comes from a 1-stage calibration (`pipelm bench ... --stages 1 -o jsonl > calib.jsonl`, with at
// least two ubatch sizes among its tests, e.g. -p 64 -n 16 --sequences 1,4) or from --pass-ms
// and --token-ms; the message sizes from the model's n_embd and --wire. Rows as bench prints
// them (same column names), so measured and simulated rows can be put side by side.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "launcher/bench.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/simulate.h"
#include "runtime/base/error.h"
#include "runtime/base/log.h"
#include "runtime/hf/hf_folder.h"
#include "runtime/model/glm4_config.h"
#include "runtime/pipeline/planner.h"
#include "runtime/pipeline/simulator.h"

namespace pipelm::launcher {

using bench::int_cell;
using bench::num_cell;
using bench::Row;
using bench::str_cell;

double parse_link_rate(const std::string& r) {
    if (r == "inf") return 0;
    static const std::pair<const char*, double> units[] = {{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}};
    for (const auto& [u, mul] : units) {
        const size_t n = std::string(u).size();
        if (r.size() > n && r.compare(r.size() - n, n, u) == 0) {
            char* end = nullptr;
            const double v = std::strtod(r.substr(0, r.size() - n).c_str(), &end);
            if (*end == '\0' && std::isfinite(v) && v > 0) return v * mul;
        }
    }
    PIPELM_THROW(ErrorCode::kInvalidArgument, "--link-rate ", r, ": give rates like 10mbit, 1gbit or inf");
}

// fn(row, line number) for every jsonl row of a --calib file, in order, until fn returns true.
// A line that is not a bench row (bad JSON, a missing field) fails naming the file and line.
void for_each_calib_row(const std::string& path, const std::function<bool(const nlohmann::json&, int)>& fn) {
    std::ifstream f(path);
    if (!f) PIPELM_THROW(ErrorCode::kIo, "--calib ", path, ": cannot open the file");
    int line_no = 0;
    for (std::string line; std::getline(f, line);) {
        ++line_no;
        if (line.empty() || line[0] != '{') continue;
        try {
            if (fn(nlohmann::json::parse(line), line_no)) return;
        } catch (const nlohmann::json::exception& e) {
            PIPELM_THROW(ErrorCode::kFormat, "--calib ", path, " line ", line_no, ": not a bench jsonl row (", e.what(), ")");
        }
    }
}

// ppN runs ceil(N/ub) ubatches one after another, tgN one token per ubatch, tgN@Kseq K tokens
// per ubatch.
std::vector<std::pair<int, double>> calibration_points(const std::string& path) {
    std::vector<std::pair<int, double>> pts;
    for_each_calib_row(path, [&](const nlohmann::json& r, int line_no) {
        const double tps = r.at("tps").get<double>();
        if (r.at("stages").get<int>() != 1 || !(tps > 0)) return false;
        const int np = r.at("n_prompt").get<int>(), ng = r.at("n_gen").get<int>();
        const int k = r.at("n_seq").get<int>(), ub = r.at("ubatch").get<int>();
        if (np <= 0 && ng <= 0) return false;
        if (r.at("test").get<std::string>().find('+') != std::string::npos) return false;  // two kinds of ubatch
        if (ub <= 0 || k <= 0) PIPELM_THROW(ErrorCode::kFormat, "--calib ", path, " line ", line_no, ": ubatch and n_seq must be > 0");
        const double seconds = (np > 0 && ng == 0 ? np : double(ng) * k) / tps;
        if (np > 0 && ng == 0) {
            if (np % ub == 0) pts.push_back({ub, seconds / (np / ub)});
        } else if (ng > 0) {
            pts.push_back({k, seconds / ng});
        }
        return false;
    });
    return pts;
}

// A multi-stage row of the calibration (bench over TCP workers or ranks: its link_rate label says
// the rate): the 1-sequence decode row for --msg-cpu-us fit, the prompt row for --byte-cpu-ns fit.
struct LinkRow {
    int stages = 0, n_prompt = 0, n_gen = 0, ubatch = 0;
    double tps = 0;
    double busy = 0;  // the stages' compute seconds per wall second (sum of busy_pct / 100)
    std::string test, link_rate;
};

LinkRow link_row(const std::string& path, bool decode, const char* flag) {
    LinkRow d;
    for_each_calib_row(path, [&](const nlohmann::json& r, int) {
        const std::string test = r.at("test").get<std::string>();  // tgN@1seq (a 1-token prompt step first), ppN
        const int ng = r.at("n_gen").get<int>(), np = r.at("n_prompt").get<int>();
        if (r.at("stages").get<int>() < 2 || r.at("n_seq").get<int>() != 1 || test.rfind(decode ? "tg" : "pp", 0) != 0 ||
            test.find('+') != std::string::npos || (decode ? ng <= 0 : np <= 0 || ng != 0) ||
            !(r.at("tps").get<double>() > 0))
            return false;
        d.stages = r.at("stages").get<int>();
        d.n_gen = ng;
        d.n_prompt = np;
        d.ubatch = r.at("ubatch").get<int>();
        d.tps = r.at("tps").get<double>();
        d.test = test;
        for (const auto& b : r.at("busy_pct")) d.busy += b.get<double>() / 100;
        d.link_rate = r.value("link_rate", std::string());
        if (d.link_rate.empty() || d.link_rate == "none") d.link_rate = "inf";
        parse_link_rate(d.link_rate);  // a label that is no rate fails here, naming it
        return true;
    });
    if (d.stages == 0)
        PIPELM_THROW(ErrorCode::kInvalidArgument, flag, " fit: --calib ", path, " has no ",
                     decode ? "decode row of one sequence" : "prompt row", " over 2 or more stages (add one: bench --workers ... ",
                     decode ? "-p 0 -n 16 --sequences 1" : "-p 128 -n 0", " -o jsonl >> ", path, ")");
    if (decode && !(d.busy > 0 && d.busy < d.stages))
        PIPELM_THROW(ErrorCode::kInvalidArgument, flag, " fit: --calib ", path, ": the ", d.test, " row over ", d.stages,
                     " stages has no busy_pct (rows of pipelm bench carry it)");
    return d;
}

// x in [0, hi] with f(x) == target for an increasing f, by bisection; false when f(0) > target.
bool solve_increasing(const std::function<double(double)>& f, double target, double hi, double& x) {
    double lo = 0;
    if (f(lo) > target) return false;
    for (int i = 0; i < 60; ++i) (f(0.5 * (lo + hi)) < target ? lo : hi) = 0.5 * (lo + hi);
    x = 0.5 * (lo + hi);
    return true;
}

bool compute_model(const cli::Args& a, pipeline::SimModel& m) {
    if (a.has("--calib")) {
        const auto pts = calibration_points(a.str("--calib"));
        if (!pipeline::fit_compute(pts, m.pass_s, m.token_s))
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--calib ", a.str("--calib"), ": its ", pts.size(),
                         " one-stage rows do not give two ubatch sizes to fit (run bench with -p 64 -n 16 --sequences 1,4)");
        m.segments = pipeline::compute_segments(pts, m.pass_s, m.token_s);
        return true;
    }
    if (!a.has("--pass-ms") || !a.has("--token-ms")) return false;
    m.pass_s = a.number("--pass-ms") * 1e-3;
    m.token_s = a.number("--token-ms") * 1e-3;
    return true;
}

int cmd_simulate(int argc, char** argv) {
    cli::Args a("simulate", {
        {"--model", "-m", true, "FILE", "GGUF model (only its shape is read: n_embd, layers)", ""},
        {"--embd", "", true, "N", "hidden size instead of -m", ""},
        {"--stages", "", true, "N,..", "stage counts (layers split evenly)", "1,2,4"},
        {"--n-prompt", "-p", true, "N,..", "prompt tokens of the pp tests (0 = none)", "512"},
        {"--n-gen", "-n", true, "N,..", "generated tokens per sequence of the tg tests (0 = none)", "128"},
        {"--sequences", "", true, "N,..", "concurrent sequences of the tg tests", "1"},
        {"--ubatch", "-ub", true, "N,..", "tokens per ubatch", "64"},
        {"--link-rate", "", true, "R,..", "link rates: 10mbit, 1gbit, ... or inf", "1gbit"},
        {"--link-latency-us", "", true, "US", "latency added to every message", "50"},
        {"--msg-cpu-us", "", true, "US|fit", "host time to take in one message (slows with the host's cores, as compute); fit: from the --calib file's multi-stage 1-sequence decode row (its time outside compute)", "0"},
        {"--byte-cpu-ns", "", true, "NS|fit", "host time per byte a stage sends (network stack; charged to the sender); fit: from the --calib file's multi-stage prompt row", "0"},
        {"--link-burst", "", true, "BYTES|tbf", "token bucket of the link (tbf: as hosts.sh --rate sets it, max(rate/4000, 16 KiB)); 0 = a plain rate", "0"},
        {"--wire", "", true, "f32|bf16", "format of activations on links", "f32"},
        {"--stages-per-host", "", true, "N|all", "stages that share a host's read bandwidth and cores (in-process stages, several ranks per node)", "1"},
        {"--host-bw", "", true, "GB/s|measure", "read bandwidth of a host, all its cores together (bench --roofline prints it; measure: this machine's)", ""},
        {"--stage-bw", "", true, "GB/s", "read bandwidth of one stage's threads alone, as in the calibration (measured with --host-bw measure)", ""},
        {"--host-cores", "", true, "N", "cores of a host (0: one per thread)", "0"},
        {"--threads", "-t", true, "N", "threads per stage (as the calibration ran)", "1"},
        {"--calib", "", true, "FILE", "1-stage `pipelm bench -o jsonl` rows to fit the compute model to", ""},
        {"--pass-ms", "", true, "MS", "fixed milliseconds of a ubatch through the whole model (instead of --calib)", ""},
        {"--token-ms", "", true, "MS", "milliseconds per token of a ubatch (instead of --calib)", ""},
        {"--output", "-o", true, "md|csv|json|jsonl", "output format", "md"},
    });
    std::map<std::string, std::string> lists;
    std::vector<std::string> args = bench::split_list_flags(argc, argv, lists);
    std::vector<char*> av;
    for (auto& s : args) av.push_back(s.data());
    if (!a.parse(static_cast<int>(av.size()), av.data(), 2,
                 "Predicts bench's t/s, TTFT, inter-token latency and busy per stage for stage counts, link rates,\n"
                 "sequences and ubatch sizes, from a discrete-event model of the pipeline (runtime/pipeline/simulator.h)\n"
                 "and a 1-stage calibration: pipelm bench -m M -t T --stages 1 -p 64 -n 16 --sequences 1,4 -o jsonl > c.jsonl\n"
                 "Stages on one host (--stages-per-host) share its cores (--host-cores) and read bandwidth (--host-bw)."))
        return 0;
    auto list = [&](const char* flag, int lo, int hi) {
        return bench::int_list(flag, lists.count(flag) ? lists[flag] : a.str(flag), lo, hi);
    };
    const auto stages = list("--stages", 1, 1024), prompts = list("--n-prompt", 0, 1 << 20), gens = list("--n-gen", 0, 1 << 20);
    const auto seqs = list("--sequences", 1, 4096), ubatches = list("--ubatch", 1, 1 << 16);
    pipeline::SimModel m;
    int n_layer = 0;
    std::optional<pipeline::ModelCosts> costs;  // with -m: each stage's share as the auto split gives it
    if (a.has("--model")) {
        auto f = hf::open_model(a.str("--model"));  // a GGUF or a Hugging Face folder: only the shape
        const auto cfg = model::Glm4Config::from_gguf(*f);
        m.bytes_per_token = cfg.n_embd;
        n_layer = cfg.n_layer;
        costs = pipeline::ModelCosts::from_gguf(*f, cfg);
    } else if (a.has("--embd")) {
        m.bytes_per_token = a.integer("--embd");
    } else {
        PIPELM_THROW(ErrorCode::kInvalidArgument, "simulate: give -m MODEL.gguf or --embd N (the hidden size)");
    }
    const std::string wire = a.str("--wire");
    if (wire != "f32" && wire != "bf16") PIPELM_THROW(ErrorCode::kInvalidArgument, "--wire ", wire, ": use f32 or bf16");
    m.bytes_per_token *= wire == "f32" ? 4 : 2;
    m.link_latency_s = a.number("--link-latency-us") * 1e-6;
    const bool fit_msg_cpu = a.str("--msg-cpu-us") == "fit", fit_byte_cpu = a.str("--byte-cpu-ns") == "fit";
    if (!fit_msg_cpu) m.msg_cpu_s = a.number("--msg-cpu-us") * 1e-6;
    if (!fit_byte_cpu) m.byte_cpu_s = a.number("--byte-cpu-ns") * 1e-9;
    if (!(m.link_latency_s >= 0 && m.link_latency_s < 10) || !(m.msg_cpu_s >= 0 && m.msg_cpu_s < 10))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--link-latency-us and --msg-cpu-us take microseconds from 0 to 1e7");
    if (!(m.byte_cpu_s >= 0 && m.byte_cpu_s < 1e-5))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--byte-cpu-ns takes nanoseconds from 0 to 1e4");
    if ((fit_msg_cpu || fit_byte_cpu) && !a.has("--calib"))
        PIPELM_THROW(ErrorCode::kInvalidArgument, fit_msg_cpu ? "--msg-cpu-us" : "--byte-cpu-ns",
                     " fit needs --calib FILE with multi-stage rows (a one-sequence decode row, a prompt row)");
    if (!compute_model(a, m)) {
        PIPELM_THROW(ErrorCode::kInvalidArgument, "simulate: give --calib FILE.jsonl or --pass-ms and --token-ms");
    }
    if (!(m.pass_s >= 0 && m.token_s >= 0 && m.pass_s + m.token_s > 0))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "simulate: the compute model needs --pass-ms, --token-ms >= 0 (not both 0)");
    // Hosts: how many stages share one, its cores and read bandwidth.
    const std::string per_host = a.str("--stages-per-host");
    int stages_per_host = 1 << 20;
    if (per_host != "all") {
        char* end = nullptr;
        const long v = std::strtol(per_host.c_str(), &end, 10);
        if (per_host.empty() || *end != '\0' || v < 1 || v > (1 << 20))
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--stages-per-host ", per_host, ": give a count >= 1 or all");
        stages_per_host = static_cast<int>(v);
    }
    m.host_cores = static_cast<int>(a.integer("--host-cores"));
    m.threads_per_stage = static_cast<int>(a.integer("--threads"));
    auto gbs = [&](const char* flag) {
        char* end = nullptr;
        const std::string v = a.str(flag);
        const double x = std::strtod(v.c_str(), &end) * 1e9;
        if (v.empty() || *end != '\0' || !(x > 0) || !std::isfinite(x))
            PIPELM_THROW(ErrorCode::kInvalidArgument, flag, " ", v, ": give GB/s > 0", flag == std::string("--host-bw") ? " or measure" : "");
        return x;
    };
    if (a.has("--host-bw") && a.str("--host-bw") == "measure") {
        // One stage's threads alone, and every core of this machine (or --host-cores of them).
        const int t = m.threads_per_stage;
        const int all = m.host_cores > 0 ? m.host_cores : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
        auto bw = bench::measure_bandwidth({t, all});
        m.stage_read_Bps = bw.gbs[t] * 1e9;
        m.host_read_Bps = bw.gbs[all] * 1e9;
        PIPELM_INFO(fmt::format("simulate: this machine reads {:.2f} GB/s with {} thread(s), {:.2f} GB/s with {}",
                                m.stage_read_Bps / 1e9, t, m.host_read_Bps / 1e9, all));
        if (a.has("--stage-bw")) m.stage_read_Bps = gbs("--stage-bw");
    } else if (a.has("--host-bw") || a.has("--stage-bw")) {
        if (!a.has("--host-bw") || !a.has("--stage-bw"))
            PIPELM_THROW(ErrorCode::kInvalidArgument, "give --host-bw and --stage-bw together (or --host-bw measure): a host's "
                         "bandwidth shared by its stages, and what one stage alone reads");
        m.host_read_Bps = gbs("--host-bw");
        m.stage_read_Bps = gbs("--stage-bw");
    }
    std::vector<std::string> rates;
    {
        std::stringstream ss(a.str("--link-rate"));
        for (std::string r; std::getline(ss, r, ',');) rates.push_back(r);
    }
    const std::string out = a.str("--output");
    if (out != "md" && out != "csv" && out != "json" && out != "jsonl")
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--output ", out, ": use md, csv, json or jsonl");
    PIPELM_INFO(fmt::format("simulate: compute {:.3f} ms per ubatch + {:.4f} ms per token, {} bytes per token on a link",
                            m.pass_s * 1e3, m.token_s * 1e3, m.bytes_per_token));
    if (m.segments.size() > 1) {
        std::string segs;
        for (const auto& g : m.segments)
            segs += fmt::format("{}up to {} tokens {:.3f} + {:.4f} ms", segs.empty() ? "" : ", ", g.upto, g.pass_s * 1e3,
                                g.token_s * 1e3);
        PIPELM_INFO("simulate: through each measured ubatch size: ", segs);
    }

    // The pipeline of S stages: the compute shares of the split bench would run (--split auto: the
    // lm_head makes the last stage's share larger than its layers'), even without a model; stage s
    // on host s / stages_per_host.
    auto set_stages = [&](int S) {
        if (n_layer > 0 && S > n_layer)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--stages ", S, ": the model has only ", n_layer, " layers");
        m.share.assign(S, 1.0 / S);
        if (costs) {
            pipeline::PlanRequest req;
            req.n_stages = S;
            const auto plan = pipeline::make_plan(*costs, req);
            for (int st = 0; st < S; ++st) m.share[st] = plan[st].compute_share;
        }
        m.host.resize(S);
        for (int st = 0; st < S; ++st) m.host[st] = st / std::min(stages_per_host, S);
    };
    auto set_rate = [&](const std::string& rate) {
        m.link_bps = parse_link_rate(rate);
        const std::string burst = a.str("--link-burst");
        if (burst == "tbf") {
            m.link_burst_bytes = std::max(m.link_bps / 8 / 500, 16384.0);  // scripts/cluster/hosts.sh burst_for
        } else {
            char* end = nullptr;
            m.link_burst_bytes = std::strtod(burst.c_str(), &end);
            if (burst.empty() || *end != '\0' || !(m.link_burst_bytes >= 0) || !std::isfinite(m.link_burst_bytes))
                PIPELM_THROW(ErrorCode::kInvalidArgument, "--link-burst ", burst, ": give bytes (0 = none) or tbf");
        }
    };
    if (fit_msg_cpu || fit_byte_cpu) {
        // Host time per message: the decode row's time outside compute per token (the wall time
        // less the stages' busy time, so the calibration's own compute speed drops out) as the
        // model gives it for one sequence. Host time per byte: the prompt row's t/s. Each fit
        // holds the other term; a few rounds settle both.
        const std::string calib = a.str("--calib");
        const LinkRow d = fit_msg_cpu ? link_row(calib, true, "--msg-cpu-us") : LinkRow{};
        const LinkRow pr = fit_byte_cpu ? link_row(calib, false, "--byte-cpu-ns") : LinkRow{};
        const double outside = fit_msg_cpu ? (1 - d.busy) / d.tps : 0;  // seconds per token, one sequence
        bool byte_free = false;
        for (int round = 0; round < (fit_msg_cpu && fit_byte_cpu ? 4 : 1); ++round) {
            if (fit_msg_cpu) {
                set_stages(d.stages);
                set_rate(d.link_rate);
                auto f = [&](double x) {
                    m.msg_cpu_s = x;
                    const pipeline::SimResult r = pipeline::simulate_decode(m, 1, d.n_gen, 1, 1);
                    double compute = 0;
                    for (size_t s = 0; s < r.busy_s.size(); ++s) compute += r.busy_s[s] - r.host_s[s];
                    return (r.seconds - compute) / static_cast<double>(r.tokens);
                };
                if (!solve_increasing(f, outside, 0.1, m.msg_cpu_s))
                    PIPELM_THROW(ErrorCode::kInvalidArgument, "--msg-cpu-us fit: the ", d.test, " row over ", d.stages,
                                 " stages spends ", fmt::format("{:.3f}", outside * 1e3), " ms per token outside compute, less than the model "
                                 "with no host time per message (", fmt::format("{:.3f}", f(0) * 1e3),
                                 " ms): check --link-latency-us, the rate and the calibration");
            }
            if (fit_byte_cpu) {
                set_stages(pr.stages);
                if (round == 0) {  // where the link sets the pace, the row says little of the host's time
                    const double held = m.byte_cpu_s;
                    m.byte_cpu_s = 0;
                    set_rate("inf");
                    const double unbound = pipeline::simulate_prompt(m, pr.n_prompt, pr.ubatch).tps();
                    set_rate(pr.link_rate);
                    const double at_rate = pipeline::simulate_prompt(m, pr.n_prompt, pr.ubatch).tps();
                    if (at_rate < 0.75 * unbound)
                        PIPELM_THROW(ErrorCode::kInvalidArgument, "--byte-cpu-ns fit: the ", pr.test, " row over ", pr.stages,
                                     " stages at ", pr.link_rate, " is link-bound (the model gives ", fmt::format("{:.1f}", at_rate),
                                     " t/s there, ", fmt::format("{:.1f}", unbound), " without the link): calibrate on a faster link");
                    m.byte_cpu_s = held;
                }
                set_rate(pr.link_rate);
                auto f = [&](double x) {
                    m.byte_cpu_s = x;
                    return -pipeline::simulate_prompt(m, pr.n_prompt, pr.ubatch).tps();
                };
                byte_free = !solve_increasing(f, -pr.tps, 1e-6, m.byte_cpu_s);
                if (byte_free) m.byte_cpu_s = 0;  // as fast as the model without it, or faster
            }
        }
        if (fit_msg_cpu)
            PIPELM_INFO(fmt::format("simulate: {:.0f} us of host time per message, fitted to the {}-stage {} row at {} ({:.3f} "
                                    "ms per token outside compute)", m.msg_cpu_s * 1e6, d.stages, d.test, d.link_rate, outside * 1e3));
        if (fit_byte_cpu)
            PIPELM_INFO(fmt::format("simulate: {:.1f} ns of host time per byte sent, fitted to the {}-stage {} row at {} "
                                    "({:.2f} t/s{})", m.byte_cpu_s * 1e9, pr.stages, pr.test, pr.link_rate, pr.tps,
                                    byte_free ? ", as fast as the model without it" : ""));
    }

    std::vector<Row> rows;
    for (const int S : stages) {
        set_stages(S);
        for (const std::string& rate : rates)
            for (const int ub : ubatches) {
                set_rate(rate);
                auto emit = [&](const std::string& test, const pipeline::SimResult& r, bool latency) {
                    Row row = {{"stages", int_cell(S)}, {"link_rate", str_cell(rate)}, {"ubatch", int_cell(ub)},
                               {"test", str_cell(test)}, {"tps", num_cell(r.tps(), 2)}};
                    std::vector<double> busy_pct;
                    for (int s = 0; s < S; ++s) busy_pct.push_back(100 * r.busy_s[s] / r.seconds);
                    row.push_back({"busy_pct", bench::pct_list_cell(busy_pct)});
                    if (latency)
                        row.insert(row.end(), {{"ttft_ms_p50", num_cell(1e3 * bench::percentile(r.ttft, 0.5), 1)},
                                               {"itl_ms_p50", num_cell(1e3 * bench::percentile(r.itl, 0.5), 1)},
                                               {"itl_ms_p99", num_cell(1e3 * bench::percentile(r.itl, 0.99), 1)}});
                    if (out == "jsonl") bench::print_jsonl(row);
                    rows.push_back(std::move(row));
                };
                for (const int p : prompts)
                    if (p > 0) emit("pp" + std::to_string(p), pipeline::simulate_prompt(m, p, ub), false);
                for (const int n : gens)
                    for (const int k : n > 0 ? seqs : std::vector<int>{})
                        emit("tg" + std::to_string(n) + "@" + std::to_string(k) + "seq", pipeline::simulate_decode(m, k, n, 1, ub),
                             true);
            }
    }
    if (out != "jsonl") bench::print_table(rows, out);
    return 0;
}

}  // namespace pipelm::launcher
