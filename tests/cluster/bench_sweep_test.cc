// `pipelm bench` as a scaling-study tool: value lists for -p, -n, --stages and -ub make one row per
// combination, -o jsonl prints each row (with every parameter and the machine) as soon as it is
// measured, bad lists exit 2, and the default table is unchanged. Performance is never asserted:
// only which rows and fields come out.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <sstream>
#include <tuple>

#include "tests/testing/test_util.h"

namespace pipelm::testing {
namespace {

const std::string kTiny = data_path("models/glm4-tiny/model.gguf");

std::vector<std::string> lines_of(const std::string& s) {
    std::vector<std::string> v;
    std::stringstream ss(s);
    for (std::string l; std::getline(ss, l);) v.push_back(l);
    return v;
}

TEST(BenchSweep, ValueListsGiveOneJsonlRowPerCombinationWithEveryParameter) {
    const RunResult r = run_cmd(pipelm_cmd("bench -m " + kTiny + " -p 16,32 -n 4 --stages 1,2 -ub 8,16 -r 1 -t 1 "
                                           "-o jsonl --link-rate 1gbit"));
    ASSERT_EQ(r.status, 0) << r.output;
    std::set<std::tuple<int64_t, int64_t, std::string>> seen;
    size_t first_row = std::string::npos, second_session = std::string::npos;
    const auto lines = lines_of(r.output);
    for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].find("2 stage(s)") != std::string::npos && second_session == std::string::npos) second_session = i;
        if (lines[i].empty() || lines[i][0] != '{') continue;
        if (first_row == std::string::npos) first_row = i;
        const auto row = nlohmann::json::parse(lines[i]);
        for (const char* key : {"model", "type", "params", "threads", "link", "cpu_isa", "cpu_model", "cores", "kernel",
                                "act_quant", "wire", "n_ctx", "reps", "n_seq", "tps", "bubble_pct", "link_mb",
                                "others_running"})
            EXPECT_TRUE(row.contains(key)) << key << " missing in " << lines[i];
        EXPECT_GE(row.at("others_running").get<double>(), 0.0) << "Linux says how many tasks run: " << lines[i];
        EXPECT_EQ(row.at("link_rate"), "1gbit");
        EXPECT_EQ(row.at("link"), "in-process");
        EXPECT_FALSE(row.at("cpu_model").get<std::string>().empty());
        const int64_t stages = row.at("stages").get<int64_t>();
        EXPECT_EQ(static_cast<int64_t>(row.at("busy_pct").size()), stages) << lines[i];
        const std::string test = row.at("test").get<std::string>();
        const int64_t n_prompt = row.at("n_prompt").get<int64_t>(), n_gen = row.at("n_gen").get<int64_t>();
        EXPECT_EQ(test, n_prompt > 0 ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen));
        EXPECT_TRUE(seen.insert({stages, row.at("ubatch").get<int64_t>(), test}).second) << "duplicate row " << lines[i];
    }
    EXPECT_EQ(seen.size(), 2u * 2u * 3u) << r.output;
    for (int64_t s : {1, 2})
        for (int64_t ub : {8, 16})
            for (const char* t : {"pp16", "pp32", "tg4"}) EXPECT_TRUE(seen.count({s, ub, t})) << s << " " << ub << " " << t;
    // Streamed: the 1-stage rows are out before the 2-stage session is opened.
    ASSERT_NE(first_row, std::string::npos);
    ASSERT_NE(second_session, std::string::npos) << r.output;
    EXPECT_LT(first_row, second_session) << r.output;
}

TEST(BenchSweep, BadListsExit2NamingTheFlag) {
    for (const std::string bad : {"--stages 1,0", "-ub 8,,16", "-p 16,x", "-n 4,-1", "-o xml"}) {
        const RunResult r = run_cmd(pipelm_cmd("bench -m " + kTiny + " -r 1 -t 1 " + bad));
        EXPECT_EQ(r.status, 2) << bad << ": " << r.output;
        const std::string flag = bad.substr(0, bad.find(' '));
        EXPECT_NE(r.output.find(flag == "-ub" ? "--ubatch" : flag == "-p" ? "--n-prompt" : flag == "-n" ? "--n-gen"
                                                                          : flag == "-o" ? "--output" : flag),
                  std::string::npos)
            << bad << ": " << r.output;
    }
}

TEST(BenchSweep, DefaultTableIsUnchanged) {
    const RunResult r = run_cmd(pipelm_cmd("bench -m " + kTiny + " -p 16 -n 4 -r 1 -t 1"));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("| model "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("| pp16 "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("| tg4 "), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("cpu_model"), std::string::npos) << "md keeps its columns:\n" << r.output;
}

// Code points of a UTF-8 line: the columns a terminal gives it.
size_t columns(const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

// llama-bench's table: every line as wide as the header in a terminal (the "a ± b" cells were
// padded by bytes), and the model named by architecture, size and file type, with size and
// backend columns.
TEST(BenchTable, MarkdownLinesUpAndNamesTheModelAsLlamaBench) {
    const RunResult r = run_cmd(pipelm_cmd("bench -m " + kTiny + " -p 16 -n 4 -r 2 -t 1"));
    ASSERT_EQ(r.status, 0) << r.output;
    std::vector<std::string> table;
    for (const auto& l : lines_of(r.output))
        if (!l.empty() && l[0] == '|') table.push_back(l);
    ASSERT_EQ(table.size(), 4u) << r.output;
    for (const auto& l : table) EXPECT_EQ(columns(l), columns(table[0])) << r.output;
    EXPECT_NE(table[2].find(" ± "), std::string::npos) << r.output;
    std::vector<std::string> head;
    std::stringstream hs(table[0]);
    for (std::string c; std::getline(hs, c, '|');)
        if (c.find_first_not_of(' ') != std::string::npos) head.push_back(c.substr(c.find_first_not_of(' '), c.find_last_not_of(' ') - c.find_first_not_of(' ') + 1));
    for (const char* col : {"model", "size", "params", "backend", "test", "t/s"})
        EXPECT_NE(std::find(head.begin(), head.end(), col), head.end()) << col << "\n" << r.output;
    EXPECT_NE(table[2].find("| glm4 "), std::string::npos) << r.output;
    EXPECT_NE(table[2].find(" MiB |"), std::string::npos) << r.output;
    EXPECT_NE(table[2].find("| CPU "), std::string::npos) << r.output;
    EXPECT_EQ(table[2].find("model.gguf"), std::string::npos) << "the model column is not the file name\n" << r.output;
}

// --sweep: -n generated tokens per depth, -r repetitions (mean ± sd), the context filled up to
// -p + -n in --ubatch steps, a progress line per depth and each row printed as it is measured.
TEST(BenchSweep, SweepHonoursPromptGenRepsAndShowsProgress) {
    const RunResult r = run_cmd(pipelm_cmd("bench -m " + kTiny + " --sweep -p 24 -n 3 -r 2 -ub 8 -t 1 -o jsonl"));
    ASSERT_EQ(r.status, 0) << r.output;
    std::vector<int64_t> depths;
    size_t last_progress = 0, first_row = std::string::npos;
    const auto lines = lines_of(r.output);
    for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].find("sweep 1/3") != std::string::npos) last_progress = i;
        if (lines[i].empty() || lines[i][0] != '{') continue;
        if (first_row == std::string::npos) first_row = i;
        const auto row = nlohmann::json::parse(lines[i]);
        EXPECT_EQ(row.at("tg").get<int64_t>(), 3) << lines[i];
        EXPECT_EQ(row.at("pp").get<int64_t>(), 8) << lines[i];
        EXPECT_EQ(row.at("reps").get<int64_t>(), 2) << lines[i];
        EXPECT_TRUE(row.contains("s_tg_tps_sd")) << lines[i];
        depths.push_back(row.at("n_kv").get<int64_t>());
    }
    EXPECT_EQ(depths, (std::vector<int64_t>{0, 8, 16})) << r.output;  // 16 + 8 + 3 <= 27 = -p + -n
    EXPECT_NE(r.output.find("sweep 3/3"), std::string::npos) << r.output;
    EXPECT_LT(last_progress, first_row) << r.output;
}

}  // namespace
}  // namespace pipelm::testing
