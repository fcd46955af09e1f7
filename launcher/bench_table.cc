// Result tables of `pipelm bench`: markdown (the default, llama-bench-like), csv, a json array,
// or jsonl (one object per row, printed as soon as the row is measured, so a long sweep can be
// followed and a killed one keeps its rows), and the machine description every row carries.
#include <sys/utsname.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>

#include "launcher/bench.h"
#include "kernels/matmul.h"

namespace pipelm::launcher::bench {

namespace {

using Json = nlohmann::ordered_json;

// `v` rounded to `prec` decimals as a JSON number (null if not finite): the value of the decimal
// text, so the JSON shows what csv shows (without its trailing zeros).
Json rounded(double v, int prec) {
    if (!std::isfinite(v)) return nullptr;
    const std::string t = fmt::format("{:.{}f}", v, prec);
    double r = v;
    std::from_chars(t.data(), t.data() + t.size(), r);
    return r;
}

}  // namespace

Cell str_cell(const std::string& s) { return {s, s, "", false}; }
Cell num_cell(double v, int prec) { return {fmt::format("{:.{}f}", v, prec), rounded(v, prec), "", true}; }
Cell int_cell(int64_t v, const std::string& md) { return {fmt::format("{}", v), v, md, true}; }
Cell mean_sd_cell(double mean, double sd, int prec) {
    return {fmt::format("{:.{}f}", mean, prec), rounded(mean, 4), fmt::format("{:.{}f} ± {:.{}f}", mean, prec, sd, prec),
            true};
}
Cell pct_list_cell(const std::vector<double>& pct) {
    Cell c{fmt::format("{:.1f}", fmt::join(pct, "/")), Json::array(), "", false};
    for (double p : pct) c.json.push_back(rounded(p, 2));
    return c;
}

size_t display_width(const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;  // continuation bytes add no column
    return n;
}

namespace {

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

const Cell* find_cell(const Row& r, const std::string& k) {
    for (const auto& kv : r)
        if (kv.first == k) return &kv.second;
    return nullptr;
}

Json row_json(const Row& row) {
    Json o = Json::object();
    for (const auto& kv : row) o[kv.first] = kv.second.json;
    return o;
}

// UTF-8 as it is; a byte that is not (a file name's) becomes U+FFFD instead of an exception.
std::string dump(const Json& j, int indent) { return j.dump(indent, ' ', false, Json::error_handler_t::replace); }

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string o = "\"";
    for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
    return o + "\"";
}

// llama-bench's markdown: "_sd" columns folded into "a ± b" cells, numbers right-aligned, padded
// by terminal columns.
void markdown(fmt::memory_buffer& out, const std::vector<Row>& rows, std::vector<std::string> cols) {
    cols.erase(std::remove_if(cols.begin(), cols.end(), [](const std::string& k) {
                   return k.size() > 3 && k.compare(k.size() - 3, 3, "_sd") == 0;
               }), cols.end());
    std::vector<std::string> head;
    std::vector<size_t> w;
    std::vector<bool> right;
    for (const auto& k : cols) {
        head.push_back(md_name(k));
        w.push_back(display_width(head.back()));
        right.push_back(false);
    }
    std::vector<std::vector<std::string>> text(rows.size(), std::vector<std::string>(cols.size()));
    for (size_t i = 0; i < rows.size(); ++i)
        for (size_t j = 0; j < cols.size(); ++j)
            if (const Cell* c = find_cell(rows[i], cols[j])) {
                text[i][j] = c->md.empty() ? c->text : c->md;
                w[j] = std::max(w[j], display_width(text[i][j]));
                if (c->num) right[j] = true;
            }
    auto it = std::back_inserter(out);
    auto line = [&](const std::vector<std::string>& v) {
        fmt::format_to(it, "|");
        for (size_t j = 0; j < cols.size(); ++j) {
            const size_t pad = w[j] - std::min(w[j], display_width(v[j]));
            if (right[j]) fmt::format_to(it, " {:{}}{} |", "", pad, v[j]);
            else fmt::format_to(it, " {}{:{}} |", v[j], "", pad);
        }
        fmt::format_to(it, "\n");
    };
    line(head);
    fmt::format_to(it, "|");
    for (size_t j = 0; j < cols.size(); ++j) fmt::format_to(it, "{:-<{}}{}", "", w[j] + 1, right[j] ? ":|" : "-|");
    fmt::format_to(it, "\n");
    for (const auto& t : text) line(t);
}

}  // namespace

std::string format_table(const std::vector<Row>& rows, const std::string& format) {
    if (format == "json") {
        Json a = Json::array();
        for (const auto& r : rows) a.push_back(row_json(r));
        return dump(a, 2) + "\n";
    }
    if (format == "jsonl") {
        std::string s;
        for (const auto& r : rows) s += dump(row_json(r), -1) + "\n";
        return s;
    }
    std::vector<std::string> cols;
    for (const auto& r : rows)
        for (const auto& kv : r)
            if (std::find(cols.begin(), cols.end(), kv.first) == cols.end()) cols.push_back(kv.first);
    fmt::memory_buffer out;
    if (format == "csv") {
        auto it = std::back_inserter(out);
        for (size_t j = 0; j < cols.size(); ++j) fmt::format_to(it, "{}{}", j ? "," : "", csv_field(cols[j]));
        fmt::format_to(it, "\n");
        for (const auto& r : rows) {
            for (size_t j = 0; j < cols.size(); ++j) {
                const Cell* c = find_cell(r, cols[j]);
                fmt::format_to(it, "{}{}", j ? "," : "", c ? csv_field(c->text) : "");
            }
            fmt::format_to(it, "\n");
        }
    } else {
        markdown(out, rows, cols);
    }
    return fmt::to_string(out);
}

void print_table(const std::vector<Row>& rows, const std::string& format) {
    std::fputs(format_table(rows, format).c_str(), stdout);
    std::fflush(stdout);
}

void print_jsonl(const Row& row) { print_table({row}, "jsonl"); }

Machine machine() {
    Machine m;
    std::ifstream f("/proc/cpuinfo");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
            m.cpu_model = line.substr(line.find(':') + 1);
            m.cpu_model.erase(0, m.cpu_model.find_first_not_of(" \t"));
            break;
        }
    if (m.cpu_model.empty()) m.cpu_model = "unknown";
    struct utsname u {};
    m.kernel = uname(&u) == 0 ? std::string(u.sysname) + " " + u.release : "unknown";
    m.cpu_isa = kernels::cpu_isa_name();
    m.cores = static_cast<int>(std::thread::hardware_concurrency());
    // Other work beside the benchmark: a compiler or a fuzzer on a 2-core machine moves every
    // number (one night's link sweep ran beside four fuzzers and lost 20 % on its one-sequence rows).
    double sum = 0;
    int n = 0;
    for (int i = 0; i < 10; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::ifstream st("/proc/stat");
        for (std::string line; std::getline(st, line);)
            if (line.rfind("procs_running ", 0) == 0) {
                sum += std::strtod(line.c_str() + 14, nullptr) - 1;  // less this thread
                ++n;
                break;
            }
    }
    if (n > 0) m.others_running = std::max(0.0, sum / n);
    return m;
}

}  // namespace pipelm::launcher::bench
