// Result tables of `pipelm bench`: markdown (the default, llama-bench-like), csv, a json array,
// or jsonl (one object per row, printed as soon as the row is measured, so a long sweep can be
// followed and a killed one keeps its rows), and the machine description every row carries.
#include <sys/utsname.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "launcher/bench.h"
#include "kernels/matmul.h"

namespace pipelm::launcher::bench {

std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

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

}  // namespace

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
    if (format == "jsonl") {
        for (const auto& r : rows) print_jsonl(r);
        return;
    }
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
            w.push_back(display_width(head.back()));
            right.push_back(false);
        }
        std::vector<std::vector<std::string>> text(rows.size(), std::vector<std::string>(cols.size()));
        for (size_t i = 0; i < rows.size(); ++i)
            for (size_t j = 0; j < cols.size(); ++j)
                if (const Cell* c = get(rows[i], cols[j])) {
                    text[i][j] = c->md.empty() ? c->text : c->md;
                    w[j] = std::max(w[j], display_width(text[i][j]));
                    if (c->num) right[j] = true;
                }
        auto line = [&](const std::vector<std::string>& v) {
            os << "|";
            for (size_t j = 0; j < cols.size(); ++j) {
                const std::string pad(w[j] - std::min(w[j], display_width(v[j])), ' ');
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

void print_jsonl(const Row& row) {
    std::string line = "{";
    for (size_t j = 0; j < row.size(); ++j) line += (j ? ", " : "") + json_quote(row[j].first) + ": " + row[j].second.json;
    line += "}\n";
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
}

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
    return m;
}

}  // namespace pipelm::launcher::bench
