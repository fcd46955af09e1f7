// `pipelm bench` as a scaling-study tool: value lists for -p, -n, --stages and -ub make one row per
// combination, -o jsonl prints each row (with every parameter and the machine) as soon as it is
// measured, bad lists exit 2, and the default table is unchanged. Performance is never asserted:
// only which rows and fields come out.
#include <gtest/gtest.h>

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
        const json_lite::Value row = json_lite::parse(lines[i]);
        for (const char* key : {"model", "type", "params", "threads", "link", "cpu_isa", "cpu_model", "cores", "kernel",
                                "act_quant", "wire", "n_ctx", "reps", "n_seq", "tps", "bubble_pct", "link_mb"})
            EXPECT_TRUE(row.has(key)) << key << " missing in " << lines[i];
        EXPECT_EQ(row.at("link_rate").str, "1gbit");
        EXPECT_EQ(row.at("link").str, "in-process");
        EXPECT_FALSE(row.at("cpu_model").str.empty());
        const int64_t stages = row.at("stages").as_int();
        EXPECT_EQ(static_cast<int64_t>(row.at("busy_pct").arr.size()), stages) << lines[i];
        const std::string test = row.at("test").str;
        EXPECT_EQ(test, row.at("n_prompt").as_int() > 0 ? "pp" + std::to_string(row.at("n_prompt").as_int())
                                                        : "tg" + std::to_string(row.at("n_gen").as_int()));
        EXPECT_TRUE(seen.insert({stages, row.at("ubatch").as_int(), test}).second) << "duplicate row " << lines[i];
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

}  // namespace
}  // namespace pipelm::testing
