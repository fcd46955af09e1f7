// `pipelm bench`: llama-bench-like throughput of a pipeline. Tests: prompt processing (ppN: one
// N-token prompt in --ubatch chunks that overlap across stages), generation (tgN: N greedy
// single-token steps), both (ppN+tgM), multi-sequence decode (tgM@Kseq: K sequences in up to
// n_stages groups, one group per stage in flight), a sweep-bench table over the context, and a
// roofline check (measured read bandwidth vs the weight bytes each token reads). Every test runs
// once to warm up and then -r times; t/s is mean ± stddev over the runs. Per-stage busy % and the
// bubble come from the busy seconds each stage reports with every result.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <functional>
#include <limits>
#include <map>
#include <sstream>

#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "kernels/matmul.h"
#include "runtime/base/log.h"
#include "runtime/base/thread_pool.h"
#include "runtime/model/tensors.h"

namespace pipelm::launcher {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

// ---- tables: one row = ordered (key, cell); columns are the union of keys ----------------------

struct Cell {
    std::string text;  // csv (and md unless md is set)
    std::string json;  // JSON value
    std::string md;    // markdown text when different from text
    bool num = false;
};
using Row = std::vector<std::pair<std::string, Cell>>;

std::string json_quote(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\', o += c;
        else if (static_cast<unsigned char>(c) < 0x20) o += fmt("\\u%04x", c);
        else o += c;
    }
    return o + "\"";
}
Cell str_cell(const std::string& s) { return {s, json_quote(s), "", false}; }
Cell num_cell(double v, int prec) {
    const std::string t = fmt("%.*f", prec, v);
    return {t, std::isfinite(v) ? t : "null", "", true};
}
Cell int_cell(int64_t v) {
    const std::string t = std::to_string(v);
    return {t, t, "", true};
}

std::string md_name(const std::string& k) {
    static const std::map<std::string, std::string> names = {
        {"tps", "t/s"}, {"busy_pct", "busy % per stage"}, {"bubble_pct", "bubble %"}, {"link_mb", "link MB/run"},
        {"cpu_isa", "CPU kernels"}, {"act_quant", "act-quant"},
        {"bw_gbs", "read GB/s"}, {"bw_frac", "roofline frac"}, {"ttft_ms_p50", "TTFT p50 ms"},
        {"ttft_ms_p99", "TTFT p99 ms"}, {"itl_ms_p50", "ITL p50 ms"}, {"itl_ms_p99", "ITL p99 ms"},
        {"n_kv", "N_KV"}, {"pp", "PP"}, {"tg", "TG"}, {"t_pp_s", "T_PP s"}, {"s_pp_tps", "S_PP t/s"},
        {"t_tg_s", "T_TG s"}, {"s_tg_tps", "S_TG t/s"}};
    auto it = names.find(k);
    return it == names.end() ? k : it->second;
}

void print_table(const std::vector<Row>& rows, const std::string& format) {
    std::vector<std::string> cols;
    for (const auto& r : rows)
        for (const auto& kv : r)
            if (std::find(cols.begin(), cols.end(), kv.first) == cols.end()) cols.push_back(kv.first);
    auto get = [](const Row& r, const std::string& k) -> const Cell* {
        for (const auto& kv : r)
            if (kv.first == k) return &kv.second;
        return nullptr;
    };
    std::ostringstream os;
    if (format == "json") {
        os << "[\n";
        for (size_t i = 0; i < rows.size(); ++i) {
            os << "  {";
            for (size_t j = 0; j < rows[i].size(); ++j)
                os << (j ? ", " : "") << json_quote(rows[i][j].first) << ": " << rows[i][j].second.json;
            os << (i + 1 < rows.size() ? "},\n" : "}\n");
        }
        os << "]\n";
    } else if (format == "csv") {
        auto q = [](const std::string& s) {
            if (s.find_first_of(",\"\n") == std::string::npos) return s;
            std::string o = "\"";
            for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
            return o + "\"";
        };
        for (size_t j = 0; j < cols.size(); ++j) os << (j ? "," : "") << q(cols[j]);
        os << "\n";
        for (const auto& r : rows) {
            for (size_t j = 0; j < cols.size(); ++j) {
                const Cell* c = get(r, cols[j]);
                os << (j ? "," : "") << (c ? q(c->text) : "");
            }
            os << "\n";
        }
    } else {
        cols.erase(std::remove_if(cols.begin(), cols.end(), [](const std::string& k) {  // folded into "a ± b"
                       return k.size() > 3 && k.compare(k.size() - 3, 3, "_sd") == 0;
                   }), cols.end());
        std::vector<std::string> head;
        std::vector<size_t> w;
        std::vector<bool> right;
        for (const auto& k : cols) {
            head.push_back(md_name(k));
            w.push_back(head.back().size());
            right.push_back(false);
        }
        std::vector<std::vector<std::string>> text(rows.size(), std::vector<std::string>(cols.size()));
        for (size_t i = 0; i < rows.size(); ++i)
            for (size_t j = 0; j < cols.size(); ++j)
                if (const Cell* c = get(rows[i], cols[j])) {
                    text[i][j] = c->md.empty() ? c->text : c->md;
                    w[j] = std::max(w[j], text[i][j].size());
                    if (c->num) right[j] = true;
                }
        auto line = [&](const std::vector<std::string>& v) {
            os << "|";
            for (size_t j = 0; j < cols.size(); ++j) {
                const std::string pad(w[j] - std::min(w[j], v[j].size()), ' ');
                os << " " << (right[j] ? pad + v[j] : v[j] + pad) << " |";
            }
            os << "\n";
        };
        line(head);
        os << "|";
        for (size_t j = 0; j < cols.size(); ++j) os << std::string(w[j] + 1, '-') << (right[j] ? ":|" : "-|");
        os << "\n";
        for (const auto& t : text) line(t);
    }
    std::fputs(os.str().c_str(), stdout);
    std::fflush(stdout);
}

// ---- statistics -------------------------------------------------------------------------------

struct MeanSd {
    double mean = 0, sd = 0;
};
MeanSd mean_sd(const std::vector<double>& v) {
    MeanSd m;
    if (v.empty()) return m;
    for (double x : v) m.mean += x;
    m.mean /= static_cast<double>(v.size());
    if (v.size() > 1) {
        double ss = 0;
        for (double x : v) ss += (x - m.mean) * (x - m.mean);
        m.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));
    }
    return m;
}
double percentile(std::vector<double> v, double p) {
    if (v.empty()) return std::nan("");
    std::sort(v.begin(), v.end());
    const double idx = p * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(idx), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

// ---- roofline: STREAM-like read bandwidth (sum of a buffer much larger than the LLC) ------------

uint64_t llc_bytes() {
    uint64_t best = 0;
    int best_level = 0;
    for (int i = 0; i < 16; ++i) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
        std::ifstream fl(dir + "level"), fs(dir + "size");
        int level = 0;
        std::string size;
        if (!(fl >> level) || !(fs >> size) || size.empty()) continue;
        uint64_t v = std::strtoull(size.c_str(), nullptr, 10);
        const char unit = size.back();
        if (unit == 'K') v <<= 10;
        else if (unit == 'M') v <<= 20;
        else if (unit == 'G') v <<= 30;
        if (level > best_level || (level == best_level && v > best)) best = v, best_level = level;
    }
    return best ? best : (32ull << 20);
}

// Sum of p[0..n): 256-bit loads when the CPU has AVX2 (as the matmul kernels use), else scalar.
#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, int64_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
    }
    alignas(32) uint64_t lane[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lane), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    uint64_t s = lane[0] + lane[1] + lane[2] + lane[3];
    for (; i < n; ++i) s += p[i];
    return s;
}
#endif
uint64_t sum_scalar(const uint64_t* p, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; ++i) s += p[i];
    return s;
}

struct Bandwidth {
    uint64_t buffer_bytes = 0, llc = 0;
    std::map<int, double> gbs;  // threads -> best GB/s
};

// Best of `passes` timed passes per thread count.
Bandwidth measure_bandwidth(const std::vector<int>& thread_counts, int passes = 7) {
    Bandwidth bw;
    bw.llc = llc_bytes();
    bw.buffer_bytes = std::max<uint64_t>(4 * bw.llc, 512ull << 20);
    const int64_t n = static_cast<int64_t>(bw.buffer_bytes / 8);
    std::vector<uint64_t> buf(n);
#if defined(__x86_64__)
    const bool avx2 = __builtin_cpu_supports("avx2");
#endif
    for (int threads : thread_counts) {
        if (bw.gbs.count(threads)) continue;
        ThreadPool pool(threads);
        pool.parallel_for(n, [&](int64_t b, int64_t e, int) {  // first touch by the readers
            for (int64_t i = b; i < e; ++i) buf[i] = static_cast<uint64_t>(i);
        }, 512);
        std::vector<uint64_t> sums(threads * 8);
        double best = 1e30;
        for (int rep = 0; rep < passes; ++rep) {
            const auto t0 = Clock::now();
            pool.parallel_for(n, [&](int64_t b, int64_t e, int t) {
#if defined(__x86_64__)
                if (avx2) {
                    sums[t * 8] += sum_avx2(buf.data() + b, e - b);
                    return;
                }
#endif
                sums[t * 8] += sum_scalar(buf.data() + b, e - b);
            }, 512);
            best = std::min(best, since(t0));
        }
        uint64_t check = 0;
        for (uint64_t s : sums) check += s;
        const uint64_t expect = static_cast<uint64_t>(n) * static_cast<uint64_t>(n - 1) / 2 * passes;
        PIPELM_CHECK(check == expect, "roofline: read benchmark summed wrongly");
        bw.gbs[threads] = static_cast<double>(bw.buffer_bytes) / best / 1e9;
    }
    return bw;
}

// ---- the tests --------------------------------------------------------------------------------

struct Run {
    double wall = 0;
    std::vector<double> busy;
    uint64_t link = 0;
    int64_t tokens = 0;  // tokens counted for t/s
    int64_t passes = 0;  // passes over all the weights (for the roofline)
    std::vector<double> ttft, itl;
};

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
                ++r.tokens;
            }
            if (--gr.pending == 0 && gr.step < n_gen) submit_step(g);
        }
    }

    // sweep-bench: at each N_KV, a ubatch of prompt at [N_KV, N_KV+ub), then ub/4 generated tokens
    // after it (overwritten by the next row's prompt).
    std::vector<Row> sweep(int n_ctx) {
        std::vector<Row> rows;
        const int n_tg = std::max(1, ub_ / 4);
        start(1);
        const auto chunk = random_tokens(ub_, 42);
        eng_.prefill_sample(0, chunk, 0);  // warm-up
        for (int n_kv = 0; n_kv + ub_ + n_tg <= n_ctx; n_kv += ub_) {
            auto t0 = Clock::now();
            const int32_t tok = eng_.prefill_sample(0, random_tokens(ub_, 42 + n_kv), n_kv);
            const double t_pp = since(t0);
            t0 = Clock::now();
            Run r;
            tg(r, tok, n_tg, n_kv + ub_);
            const double t_tg = since(t0);
            rows.push_back({{"pp", int_cell(ub_)}, {"tg", int_cell(n_tg)}, {"n_kv", int_cell(n_kv)},
                            {"t_pp_s", num_cell(t_pp, 3)}, {"s_pp_tps", num_cell(ub_ / t_pp, 2)},
                            {"t_tg_s", num_cell(t_tg, 3)}, {"s_tg_tps", num_cell(n_tg / t_tg, 2)}});
        }
        return rows;
    }

private:
    pipeline::Engine& eng_;
    int ub_;
    sampling::SamplerParams greedy_;
};

struct ModelInfo {
    std::string name, type;
    uint64_t params = 0;
    uint64_t weight_bytes_per_pass = 0;  // 2-D weights of the layers + lm_head
};

ModelInfo model_info(const gguf::GgufFile& f, const model::Glm4Config& cfg) {
    ModelInfo m;
    const std::string& p = f.path();
    m.name = p.substr(p.find_last_of('/') == std::string::npos ? 0 : p.find_last_of('/') + 1);
    std::map<std::string, uint64_t> by_type;
    for (const auto& t : f.tensors()) {
        m.params += static_cast<uint64_t>(t.n_elements());
        const bool matrix = t.ne.size() >= 2 && t.ne[1] > 1;
        if (!matrix) continue;
        by_type[ggml_type_name(t.type)] += t.bytes;
        if (t.name != model::tensor_name(model::TensorId::kTokenEmbd) || cfg.tied_output) m.weight_bytes_per_pass += t.bytes;
    }
    uint64_t best = 0;
    for (const auto& kv : by_type)
        if (kv.second > best) best = kv.second, m.type = kv.first;
    return m;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
    auto flags = cli::concat(cli::pipeline_flags(), {
        {"--n-prompt", "-p", true, "N", "prompt tokens of the pp test (0 = no pp test)", "512"},
        {"--n-gen", "-n", true, "N", "generated tokens of the tg test (0 = no tg test)", "128"},
        {"--repetitions", "-r", true, "N", "measured runs per test (after one warm-up run)", "3"},
        {"--pg", "", false, "", "also run prompt + generation combined (ppP+tgN)", ""},
        {"--sequences", "", true, "N,..", "tg test with N concurrent sequences of -n tokens each (up to n_stages groups in flight) instead of one", ""},
        {"--seq-prompt", "", true, "N", "prompt tokens per sequence of the --sequences test (in its time)", "1"},
        {"--sweep", "", false, "", "instead of the tests: PP and TG speed as the context fills up to --ctx (default -p + -n), in --ubatch steps", ""},
        {"--roofline", "", false, "", "measure read bandwidth; report tg results as a fraction of the roofline", ""},
        {"--output", "-o", true, "md|csv|json", "output format", "md"},
        {"--synthetic", "", true, "PRESET", "build the model in memory (not supported on CPU: use pipelm mkmodel)", ""},
    });
    cli::Args a("bench", flags);
    if (!a.parse(argc, argv, 2,
                 "Measures prompt processing (ppN, in --ubatch chunks that overlap across stages), generation (tgN,\n"
                 "greedy, ignoring EOS), optionally both (--pg), concurrent sequences (--sequences) or a sweep over the\n"
                 "context (--sweep), with random prompt ids. One warm-up run, then -r runs: mean ± stddev t/s, busy %\n"
                 "of every stage, the bubble (1 - sum busy / (stages x wall)) and bytes on links per run."))
        return 0;
    if (a.has("--synthetic"))
        PIPELM_THROW(ErrorCode::kUnsupported, "bench --synthetic ", a.str("--synthetic"),
                     ": in-memory synthetic models are not supported by the CPU backend; write one with `pipelm mkmodel "
                     "--preset ", a.str("--synthetic"), " -o FILE.gguf` and pass -m FILE.gguf");
    const int n_prompt = static_cast<int>(a.integer("--n-prompt"));
    const int n_gen = static_cast<int>(a.integer("--n-gen"));
    const int reps = static_cast<int>(a.integer("--repetitions"));
    std::vector<int> seq_list;
    std::stringstream seq_ss(a.str("--sequences"));
    for (std::string item; std::getline(seq_ss, item, ',');) {
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v < 1 || v > 4096)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--sequences ", a.str("--sequences"), ": give counts 1..4096 like 8 or 1,4,8");
        seq_list.push_back(static_cast<int>(v));
    }
    const int n_seqs = seq_list.empty() ? 0 : *std::max_element(seq_list.begin(), seq_list.end());
    const int seq_prompt = static_cast<int>(a.integer("--seq-prompt"));
    const std::string out = a.str("--output");
    if (out != "md" && out != "csv" && out != "json")
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--output ", out, ": use md, csv or json");
    if (n_prompt < 0 || n_gen < 0 || reps < 1 || seq_prompt < 1)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "bench: -p and -n must be >= 0, -r >= 1 and --seq-prompt >= 1");
    if (n_seqs > 0 && n_gen == 0) PIPELM_THROW(ErrorCode::kInvalidArgument, "--sequences needs -n > 0");

    SessionOptions o = SessionOptions::from_args(a);
    // Context and slots follow from the flags alone, so every rank of an mpirun job agrees.
    int need = std::max({n_prompt, n_gen, 1}), fill = need;
    if (a.flag("--pg")) need = std::max(need, n_prompt + n_gen);
    if (n_seqs > 0) need = std::max(need, seq_prompt + n_gen);
    if (a.flag("--sweep")) need = o.ubatch + std::max(1, o.ubatch / 4), fill = std::max(need, n_prompt + n_gen);
    if (o.n_ctx == 0) o.n_ctx = std::max(need, fill);
    else if (o.n_ctx < need) PIPELM_THROW(ErrorCode::kInvalidArgument, "--ctx ", o.n_ctx, " is below the ", need, " tokens the tests need");
    o.n_seq = std::max(o.n_seq, n_seqs);
    auto session = Session::open(o);
    if (!session->is_coordinator()) return 0;
    pipeline::Engine& eng = session->engine();
    const int S = eng.n_stages();
    const int local_stages = session->mode() == Mode::kInProcess ? S : 1;
    int sharing = local_stages;  // stages on this host sharing its cores (as the session divides them)
    if (session->mode() == Mode::kMpi)
        for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
            if (const char* e = std::getenv(v); e && std::atoi(e) > 0 && sharing == 1) sharing = std::atoi(e);
    const int threads = o.threads > 0 ? o.threads : default_threads(sharing);
    const ModelInfo mi = model_info(session->file(), session->config());
    Bench bench(eng, eng.options().ubatch);

    const std::string n_params = std::to_string(mi.params);
    // Which CPU kernels ran (the run-time ISA choice of this process; every level gives the same
    // bits, only the speed differs) and the activation mode of the CPU matmuls.
    const std::string isa = kernels::cpu_isa_name(), aq = o.act_quant.empty() ? "auto" : o.act_quant;
    PIPELM_INFO("bench: CPU kernels ", isa, ", --act-quant ", aq);
    Row base = {{"model", str_cell(mi.name)}, {"type", str_cell(mi.type)},
                {"params", {n_params, n_params, fmt("%.2f M", mi.params / 1e6), true}}, {"stages", int_cell(S)},
                {"link", str_cell(mode_name(session->mode()))}, {"threads", int_cell(threads)},
                {"cpu_isa", str_cell(isa)}, {"act_quant", str_cell(aq)}};

    if (a.flag("--sweep")) {
        std::vector<Row> rows = bench.sweep(session->n_ctx());
        for (auto& r : rows) r.insert(r.begin(), base.begin(), base.end());
        print_table(rows, out);
        session->close();
        return 0;
    }

    Bandwidth bw;
    if (a.flag("--roofline")) {
        bw = measure_bandwidth({threads, threads * local_stages});
        PIPELM_INFO(fmt("roofline: read bandwidth %.2f GB/s with %d thread(s)", bw.gbs[threads], threads),
                    local_stages > 1 ? fmt(", %.2f GB/s with %d", bw.gbs[threads * local_stages], threads * local_stages) : "",
                    fmt(" (buffer %.0f MiB, LLC %.0f MiB); weights read per pass %.1f MiB", bw.buffer_bytes / 1048576.0,
                        bw.llc / 1048576.0, mi.weight_bytes_per_pass / 1048576.0));
        if (mi.weight_bytes_per_pass < 2 * bw.llc)
            PIPELM_WARN("roofline: the weights nearly fit in the last-level cache; fractions are not memory-bound figures");
    }

    std::vector<Test> tests;
    const auto prompt = bench.random_tokens(std::max(n_prompt, 1), 42);
    if (n_prompt > 0) tests.push_back({"pp" + std::to_string(n_prompt), [&](Run& r) { bench.pp(r, prompt); }});
    if (n_gen > 0 && seq_list.empty())
        tests.push_back({"tg" + std::to_string(n_gen), [&](Run& r) { bench.tg(r, prompt[0], n_gen, 0); }, true});
    if (a.flag("--pg") && n_prompt > 0 && n_gen > 0)
        tests.push_back({"pp" + std::to_string(n_prompt) + "+tg" + std::to_string(n_gen), [&](Run& r) {
                             const int32_t tok = eng.prefill_sample(0, prompt, 0);
                             bench.tg(r, tok, n_gen, n_prompt);
                             r.tokens = n_prompt + n_gen;
                         }});
    for (const int k : seq_list)
        tests.push_back({(seq_prompt > 1 ? "pp" + std::to_string(seq_prompt) + "+" : std::string()) + "tg" +
                             std::to_string(n_gen) + "@" + std::to_string(k) + "seq",
                         [&bench, k, n_gen, seq_prompt](Run& r) { bench.multi(r, k, n_gen, seq_prompt); },
                         seq_prompt == 1, std::min(S, k) > 1, true});

    std::vector<Row> rows;
    for (const Test& t : tests) {
        bench.start(std::max(1, n_seqs));
        PIPELM_INFO("bench: ", t.name, " warm-up");
        bench.measure(t.body);
        std::vector<Run> runs;
        // Roofline tests: the read bandwidth is sampled before every repetition and after the
        // last, and each repetition is compared with the mean of the two samples around it. The
        // bandwidth of a shared machine drifts by +-20 % within seconds; a sample taken minutes
        // away (or the best of all samples) would mostly measure that drift.
        const bool roof = !bw.gbs.empty() && t.roofline;
        const int bw_threads = t.all_stages ? threads * local_stages : threads;
        std::vector<double> bw_samples;
        if (roof) bw_samples.push_back(measure_bandwidth({bw_threads}, 3).gbs[bw_threads]);
        for (int i = 0; i < reps; ++i) {
            runs.push_back(bench.measure(t.body));
            if (roof) bw_samples.push_back(measure_bandwidth({bw_threads}, 3).gbs[bw_threads]);
            PIPELM_INFO(fmt("bench: %s run %d/%d: %.2f t/s", t.name.c_str(), i + 1, reps, runs.back().tokens / runs.back().wall));
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
        const MeanSd m = mean_sd(tps);
        Row row = base;
        row.insert(row.end(), {{"test", str_cell(t.name)},
                               {"tps", {fmt("%.2f", m.mean), fmt("%.4f", m.mean), fmt("%.2f ± %.2f", m.mean, m.sd), true}},
                               {"tps_sd", num_cell(m.sd, 2)}});
        std::string bt, bj = "[";
        double busy_sum = 0;
        for (int s = 0; s < S; ++s) {
            bt += fmt("%s%.1f", s ? "/" : "", 100 * busy[s] / wall);
            bj += fmt("%s%.2f", s ? ", " : "", 100 * busy[s] / wall);
            busy_sum += busy[s];
        }
        row.insert(row.end(), {{"busy_pct", {bt, bj + "]", "", false}},
                               {"bubble_pct", num_cell(100 * (1 - busy_sum / (S * wall)), 1)},
                               {"link_mb", num_cell(link / 1e6, 2)}});
        if (roof) {
            for (size_t i = 0; i < runs.size(); ++i) {
                const double gbs = 0.5 * (bw_samples[i] + bw_samples[i + 1]);
                frac.push_back(static_cast<double>(mi.weight_bytes_per_pass) * runs[i].passes / (gbs * 1e9) /
                               runs[i].wall);
                PIPELM_INFO(fmt("bench: %s run %zu/%d: read bandwidth %.2f / %.2f GB/s before / after, roofline "
                                "fraction %.3f", t.name.c_str(), i + 1, reps, bw_samples[i], bw_samples[i + 1],
                                frac.back()));
            }
            const MeanSd f = mean_sd(frac);
            row.insert(row.end(), {{"bw_gbs", num_cell(mean_sd(bw_samples).mean, 2)},
                                   {"bw_frac", {fmt("%.3f", f.mean), fmt("%.4f", f.mean),
                                                fmt("%.3f ± %.3f", f.mean, f.sd), true}},
                                   {"bw_frac_sd", num_cell(f.sd, 3)}});
        }
        if (t.latency) {
            row.insert(row.end(), {{"ttft_ms_p50", num_cell(1e3 * percentile(ttft, 0.5), 1)},
                                   {"itl_ms_p50", num_cell(1e3 * percentile(itl, 0.5), 1)},
                                   {"itl_ms_p99", num_cell(1e3 * percentile(itl, 0.99), 1)}});
        }
        rows.push_back(row);
    }
    print_table(rows, out);
    session->close();
    return 0;
}

}  // namespace pipelm::launcher
