// `pipelm bench`'s result tables on fixed rows (launcher/bench_table.cc): the markdown and csv
// text byte for byte (the expected strings are what the hand-written writers printed before fmt
// and nlohmann-json took over), and the json/jsonl values with their types.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "launcher/bench.h"

namespace pipelm::launcher::bench {
namespace {

std::vector<Row> fixed_rows() {
    return {{{"model", str_cell("glm4 2.4M all F32")}, {"size", int_cell(9427968, "8.99 MiB")},
             {"test", str_cell("pp16")}, {"tps", mean_sd_cell(123.456789, 1.2345, 2)}, {"tps_sd", num_cell(1.2345, 2)},
             {"busy_pct", pct_list_cell({40.123, 59.877})}, {"note", str_cell("a, \"quoted\" cell")}},
            {{"model", str_cell("glm4 2.4M all F32")}, {"size", int_cell(9427968, "8.99 MiB")},
             {"test", str_cell("tg4")}, {"tps", mean_sd_cell(7.0, 0.0, 2)}, {"tps_sd", num_cell(0, 2)},
             {"busy_pct", pct_list_cell({50.0, 50.0})}, {"ttft", num_cell(NAN, 1)}}};
}

TEST(BenchTable, MarkdownIsLlamaBenchsLayout) {
    EXPECT_EQ(format_table(fixed_rows(), "md"),
              "| model             |     size | test |           t/s | busy % per stage | note             | ttft |\n"
              "|-------------------|---------:|------|--------------:|------------------|------------------|-----:|\n"
              "| glm4 2.4M all F32 | 8.99 MiB | pp16 | 123.46 ± 1.23 | 40.1/59.9        | a, \"quoted\" cell |      |\n"
              "| glm4 2.4M all F32 | 8.99 MiB | tg4  |   7.00 ± 0.00 | 50.0/50.0        |                  |  nan |\n");
}

TEST(BenchTable, CsvQuotesCommasQuotesAndLineBreaks) {
    EXPECT_EQ(format_table(fixed_rows(), "csv"),
              "model,size,test,tps,tps_sd,busy_pct,note,ttft\n"
              "glm4 2.4M all F32,9427968,pp16,123.46,1.23,40.1/59.9,\"a, \"\"quoted\"\" cell\",\n"
              "glm4 2.4M all F32,9427968,tg4,7.00,0.00,50.0/50.0,,nan\n");
    EXPECT_EQ(format_table({{{"a,b", str_cell("line\nbreak")}, {"c", str_cell("cr\r")}, {"d", str_cell("plain")}}}, "csv"),
              "\"a,b\",c,d\n\"line\nbreak\",\"cr\r\",plain\n");
}

// Strings stay strings, numbers numbers (rounded as csv shows them), a non-finite number is
// null, busy_pct a list; keys in row order; an absent cell is left out.
TEST(BenchTable, JsonKeepsKeysOrderAndTypes) {
    const auto a = nlohmann::json::parse(format_table(fixed_rows(), "json"));
    ASSERT_TRUE(a.is_array());
    ASSERT_EQ(a.size(), 2u);
    const auto& r = a[0];
    EXPECT_EQ(r.at("model"), "glm4 2.4M all F32");
    EXPECT_TRUE(r.at("size").is_number_integer());
    EXPECT_EQ(r.at("size").get<int64_t>(), 9427968);
    EXPECT_DOUBLE_EQ(r.at("tps").get<double>(), 123.4568);
    EXPECT_DOUBLE_EQ(r.at("tps_sd").get<double>(), 1.23);
    EXPECT_EQ(r.at("busy_pct"), nlohmann::json::parse("[40.12, 59.88]"));
    EXPECT_EQ(r.at("note"), "a, \"quoted\" cell");
    EXPECT_FALSE(r.contains("ttft"));
    EXPECT_TRUE(a[1].at("ttft").is_null());
    EXPECT_TRUE(a[1].at("tps").is_number());
    EXPECT_DOUBLE_EQ(a[1].at("tps").get<double>(), 7.0);

    const std::string jsonl = format_table(fixed_rows(), "jsonl");
    const size_t nl = jsonl.find('\n');
    ASSERT_NE(nl, std::string::npos);
    EXPECT_EQ(jsonl.find('\n', nl + 1), jsonl.size() - 1) << "one line per row:\n" << jsonl;
    const auto first = nlohmann::ordered_json::parse(jsonl.substr(0, nl));
    std::vector<std::string> keys;
    for (const auto& kv : first.items()) keys.push_back(kv.key());
    EXPECT_EQ(keys, (std::vector<std::string>{"model", "size", "test", "tps", "tps_sd", "busy_pct", "note"}));
    EXPECT_EQ(nlohmann::json::parse(jsonl.substr(nl + 1)), a[1]);
}

// A byte that is not UTF-8 (a file name's) does not throw: it becomes U+FFFD in JSON, and md/csv
// keep the bytes.
TEST(BenchTable, InvalidUtf8IsReplacedInJsonOnly) {
    const std::vector<Row> rows = {{{"model_file", str_cell("m\xff.gguf")}}};
    EXPECT_EQ(nlohmann::json::parse(format_table(rows, "jsonl")).at("model_file"), "m\xef\xbf\xbd.gguf");
    EXPECT_EQ(format_table(rows, "csv"), "model_file\nm\xff.gguf\n");
}

}  // namespace
}  // namespace pipelm::launcher::bench
