// Flag parsing for the pipelm sub-commands: each command declares its flags with help text;
// unknown flags and bad values are errors that name the flag and the command.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pipelm::cli {

struct FlagSpec {
    std::string name;   // "--ctx"
    std::string alias;  // "-c" or ""
    bool takes_value = true;
    std::string value_name;  // "N"
    std::string help;
    std::string default_value;
};

class Args {
public:
    Args(std::string command, std::vector<FlagSpec> specs);
    // Parses argv[first..argc); throws Error{kInvalidArgument} (also for --threads outside
    // 1..1024). Returns false if --help was given (help text already printed to stdout).
    bool parse(int argc, char** argv, int first, const std::string& summary);

    bool has(const std::string& name) const;
    std::string str(const std::string& name) const;  // value or declared default
    int64_t integer(const std::string& name) const;
    double number(const std::string& name) const;
    bool flag(const std::string& name) const { return has(name); }
    const std::string& command() const { return command_; }
    std::string help(const std::string& summary) const;

private:
    const FlagSpec* find(const std::string& arg) const;
    void check_threads() const;  // --threads: 1..1024
    std::string command_;
    std::vector<FlagSpec> specs_;
    std::map<std::string, std::string> values_;
};

// Flags shared by run, logits, bench, perplexity and plan (same in every mode).
std::vector<FlagSpec> pipeline_flags();
std::vector<FlagSpec> sampling_flags();
std::vector<FlagSpec> concat(std::vector<FlagSpec> a, const std::vector<FlagSpec>& b);

}  // namespace pipelm::cli
