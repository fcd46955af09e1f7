// Flag parsing for the pipelm sub-commands: each command declares its flags with help text;
// unknown flags and bad values are errors that name the flag and the command.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/sampling/sampler.h"

namespace pipelm::cli {

// A positional argument ("IN") that stands for a flag ("--model"): `pipelm quantize IN OUT TYPE`.
struct PositionalSpec {
    std::string name;
    std::string flag;
};

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
    Args(std::string command, std::vector<FlagSpec> specs, std::vector<PositionalSpec> positionals = {});
    // Parses argv[first..argc); throws Error{kInvalidArgument} naming the flag for an unknown
    // flag (with the closest known one), a missing value and a numeric value that is not a
    // number, not finite or outside the flag's range (numeric_ranges() in cli.cc: one table for
    // every command). llama.cpp's spellings are accepted where the meaning matches (--ctx-size,
    // --ubatch-size, --threads-batch, -fa) and point to pipelm's flags where it does not (-ngl,
    // -sm, -ts). -v/--verbose sets the log level to debug, -q/--quiet to errors only. Returns
    // false if --help was given (help text already printed to stdout). Words that are not flags fill
    // the declared positionals in order (before, between or after the flags) and set their flags; a
    // positional and its flag with different values, or one word too many, is an error.
    bool parse(int argc, char** argv, int first, const std::string& summary);

    bool has(const std::string& name) const;
    std::string str(const std::string& name) const;  // value or declared default
    int64_t integer(const std::string& name) const;  // exact int64, range-checked at parse
    double number(const std::string& name) const;    // finite, range-checked at parse
    // A comma-separated list of integers ("128,512"), each checked like integer(); an empty
    // entry ("1,,2") or an empty list is an error.
    std::vector<int64_t> integers(const std::string& name) const;
    bool flag(const std::string& name) const { return has(name); }
    const std::string& command() const { return command_; }
    std::string help(const std::string& summary) const;

private:
    const FlagSpec* find(const std::string& arg) const;
    bool take_llama_name(const std::string& arg, int argc, char** argv, int& i);
    void check_value(const FlagSpec& s, const std::string& value, const std::string& given = "") const;
    void reconcile_threads_batch();
    std::string command_;
    std::vector<FlagSpec> specs_;
    std::vector<PositionalSpec> positionals_;
    std::map<std::string, std::string> values_;
};

// Flags shared by run, logits, bench, perplexity and plan (same in every mode).
std::vector<FlagSpec> pipeline_flags();
std::vector<FlagSpec> sampling_flags();
std::vector<FlagSpec> concat(std::vector<FlagSpec> a, const std::vector<FlagSpec>& b);

// The sampling flags as parameters. --seed -1 draws a random seed and logs it, so that the run
// can be repeated with --seed N.
sampling::SamplerParams sampler_params(const Args& a);

// The candidate closest to `word` by edit distance, or "" when none is close enough to be a
// typo (distance at most max(1, |word| / 3)).
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace pipelm::cli
