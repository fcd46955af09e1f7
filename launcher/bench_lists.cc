// Value lists of `pipelm bench` and `pipelm simulate` (-p 128,512 --stages 1,2,4 ...).
#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "launcher/bench.h"
#include "runtime/base/error.h"

namespace pipelm::launcher::bench {

// "128,512" -> {128, 512}: each value in lo..hi, at least one.
std::vector<int> int_list(const std::string& flag, const std::string& text, int lo, int hi) {
    std::vector<int> v;
    std::stringstream ss(text);
    for (std::string item; std::getline(ss, item, ',');) {
        char* end = nullptr;
        const long x = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || x < lo || x > hi)
            PIPELM_THROW(ErrorCode::kInvalidArgument, flag, " ", text, ": give numbers ", lo, "..", hi, " like ", std::max(lo, 1),
                         " or ", std::max(lo, 1), ",", std::max(lo, 1) * 4, " (a comma-separated list)");
        v.push_back(static_cast<int>(x));
    }
    if (v.empty()) PIPELM_THROW(ErrorCode::kInvalidArgument, flag, ": give at least one value");
    return v;
}

// -p, -n, --ubatch/-ub and --stages take value lists in bench; the flags parser (and the session
// options it feeds) takes one number each. This copies argv with each list replaced by its first
// value and returns the lists by flag name (int_list checks them).
std::vector<std::string> split_list_flags(int argc, char** argv, std::map<std::string, std::string>& lists) {
    const std::map<std::string, std::string> names = {{"--ubatch", "--ubatch"}, {"-ub", "--ubatch"}, {"--stages", "--stages"},
                                                      {"--n-prompt", "--n-prompt"}, {"-p", "--n-prompt"},
                                                      {"--n-gen", "--n-gen"}, {"-n", "--n-gen"},
                                                      {"--sequences", "--sequences"}};
    std::vector<std::string> out(argv, argv + argc);
    for (size_t i = 2; i < out.size(); ++i) {
        const size_t eq = out[i].find('=');
        const std::string name = out[i].substr(0, eq);
        const auto it = names.find(name);
        if (it == names.end()) continue;
        std::string* value = eq != std::string::npos ? nullptr : (i + 1 < out.size() ? &out[i + 1] : nullptr);
        std::string text = eq != std::string::npos ? out[i].substr(eq + 1) : (value ? *value : "");
        if (text.find(',') == std::string::npos) continue;  // one value: the parser checks it
        lists[it->second] = text;
        const std::string first = text.substr(0, text.find(','));
        if (value) *value = first;
        else out[i] = name + "=" + first;
    }
    return out;
}

}  // namespace pipelm::launcher::bench
