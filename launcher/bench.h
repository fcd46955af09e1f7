// The pieces of `pipelm bench` (launcher/cmd_bench.cc): result tables (bench_table.cc), value
// lists (bench_lists.cc), statistics (bench_stats.cc), the read-bandwidth probe of --roofline (bench_bandwidth.cc) and
// the machine description every row carries (bench_table.cc). All run on the coordinator's main
// thread; nothing here touches the pipeline.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/gguf/gguf.h"

namespace pipelm::launcher::bench {

using Clock = std::chrono::steady_clock;
inline double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---- tables: one row = ordered (key, cell); columns are the union of keys -----------------------

// Make cells with the *_cell functions: a JSON value given as text would come out as a string.
struct Cell {
    std::string text;             // csv (and md unless md is set)
    nlohmann::ordered_json json;  // the json/jsonl value: a string, a number (null if not finite) or a list
    std::string md;               // markdown text when different from text
    bool num = false;             // right-aligned in markdown
};
using Row = std::vector<std::pair<std::string, Cell>>;

Cell str_cell(const std::string& s);
// `prec` decimals in every format (JSON: the number so rounded).
Cell num_cell(double v, int prec);
// An integer; `md`, when given, is the markdown text ("8.99 MiB" for a byte count).
Cell int_cell(int64_t v, const std::string& md = "");
// A mean over repetitions: `prec` decimals in csv, 4 in JSON, "mean ± sd" in markdown.
Cell mean_sd_cell(double mean, double sd, int prec);
// Per-stage percentages: "12.3/45.6" (one decimal) in csv and markdown, a list of numbers with
// two decimals in JSON.
Cell pct_list_cell(const std::vector<double>& pct);

// The rows as a markdown table ("md", llama-bench's layout), "csv" (RFC 4180 quoting), a "json"
// array or "jsonl" (one object per line); columns are the union of the rows' keys in first-seen
// order, an absent cell is empty (md, csv) or left out (json).
std::string format_table(const std::vector<Row>& rows, const std::string& format);
// format_table to stdout; with "jsonl" callers print each row as it finishes with print_jsonl.
void print_table(const std::vector<Row>& rows, const std::string& format);
void print_jsonl(const Row& row);

// What the machine is, for every row: CPU model (/proc/cpuinfo), kernel release (uname), the
// run-time CPU kernel level, and this build's version line.
struct Machine {
    std::string cpu_model, kernel, cpu_isa;
    int cores = 0;
    // Runnable tasks of other processes when bench started (/proc/stat procs_running, less this
    // one, averaged over 10 samples 10 ms apart; cmd_bench also takes off this job's other ranks
    // on the host); -1 where the kernel does not say.
    double others_running = -1;
};
Machine machine();

// Terminal columns of a UTF-8 cell: its code points ("±" is one column, two bytes). The
// markdown table pads by this, so a table with "a ± b" cells lines up.
size_t display_width(const std::string& s);

// ---- the model of a row (bench_model.cc) ---------------------------------------------------------

struct ModelInfo {
    std::string file;  // base name of -m
    std::string desc;  // llama-bench's model column: "glm4 206M Q8_0" (architecture, parameters, file type)
    std::string type;  // the GGML type with the most 2-D weight bytes ("q8_0")
    uint64_t params = 0, bytes = 0;       // elements and bytes of all tensors
    uint64_t weight_bytes_per_pass = 0;   // 2-D weights of the layers + lm_head
};
ModelInfo model_info(const gguf::GgufFile& f, bool tied_output);
std::string params_label(uint64_t params);  // 205'600'000 -> "206M", 9.4e9 -> "9.4B"
std::string size_label(uint64_t bytes);     // "195.94 MiB" / "1.23 GiB" as llama-bench prints sizes

// ---- value lists ------------------------------------------------------------------------------

// "128,512" -> {128, 512}: each value in lo..hi, at least one; else Error{kInvalidArgument}
// naming the flag.
std::vector<int> int_list(const std::string& flag, const std::string& text, int lo, int hi);
// -p/--n-prompt, -n/--n-gen, --sequences, --ubatch/-ub and --stages may be value lists; the flags
// parser (and the session options it feeds) takes one number each. Copies argv with each list
// replaced by its first value and returns the lists by flag name (check them with int_list).
std::vector<std::string> split_list_flags(int argc, char** argv, std::map<std::string, std::string>& lists);

// ---- statistics -------------------------------------------------------------------------------

struct MeanSd {
    double mean = 0, sd = 0;  // sd: sample standard deviation (n - 1), 0 for one value
};
MeanSd mean_sd(const std::vector<double>& v);
// Linear interpolation between closest ranks; p in [0, 1]; NaN for an empty list.
double percentile(std::vector<double> v, double p);

// ---- roofline: STREAM-like read bandwidth (sum of a buffer much larger than the LLC) ------------

struct Bandwidth {
    uint64_t buffer_bytes = 0, llc = 0;
    std::map<int, double> gbs;  // threads -> best GB/s
};
// Best of `passes` timed passes per thread count.
Bandwidth measure_bandwidth(const std::vector<int>& thread_counts, int passes = 7);

}  // namespace pipelm::launcher::bench
