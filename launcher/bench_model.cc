// What `pipelm bench` says about the model of a row, as llama-bench does: a description
// ("glm4 206M Q8_0": architecture, parameter count, llama.cpp's file type name), the size of all
// tensors, the parameter count, and the bytes of weights one pass over the model reads.
#include <fmt/format.h>

#include <cctype>
#include <map>

#include "launcher/bench.h"
#include "runtime/model/tensors.h"

namespace pipelm::launcher::bench {
namespace {

// llama.cpp's llama_model_ftype_name for the LLAMA_FTYPE_MOSTLY_* codes of general.file_type.
std::string ftype_label(int64_t code) {
    static const std::map<int64_t, const char*> names = {
        {0, "all F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {7, "Q8_0"}, {8, "Q5_0"}, {9, "Q5_1"},
        {10, "Q2_K - Medium"}, {11, "Q3_K - Small"}, {12, "Q3_K - Medium"}, {13, "Q3_K - Large"},
        {14, "Q4_K - Small"}, {15, "Q4_K - Medium"}, {16, "Q5_K - Small"}, {17, "Q5_K - Medium"},
        {18, "Q6_K"}, {25, "IQ4_NL"}, {30, "IQ4_XS"}, {32, "BF16"}};
    const auto it = names.find(code);
    return it == names.end() ? std::string() : it->second;
}

std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace

// "206M", "2.5M", "9.4B": three significant digits at most, as a model card names a size.
std::string params_label(uint64_t params) {
    const double v = static_cast<double>(params);
    const bool billions = v >= 1e9;
    const double x = billions ? v / 1e9 : v / 1e6;
    return fmt::format("{:.{}f}{}", x, x >= 10 ? 0 : 1, billions ? "B" : "M");
}

ModelInfo model_info(const gguf::GgufFile& f, bool tied_output) {
    ModelInfo m;
    const std::string& p = f.path();
    m.file = p.substr(p.find_last_of('/') == std::string::npos ? 0 : p.find_last_of('/') + 1);
    std::map<std::string, uint64_t> by_type;
    for (const auto& t : f.tensors()) {
        m.params += static_cast<uint64_t>(t.n_elements());
        m.bytes += t.bytes;
        const bool matrix = t.ne.size() >= 2 && t.ne[1] > 1;
        if (!matrix) continue;
        by_type[ggml_type_name(t.type)] += t.bytes;
        if (t.name != model::tensor_name(model::TensorId::kTokenEmbd) || tied_output) m.weight_bytes_per_pass += t.bytes;
    }
    uint64_t best = 0;
    for (const auto& kv : by_type)
        if (kv.second > best) best = kv.second, m.type = kv.first;
    const std::string a = f.has("general.architecture") ? f.get_string("general.architecture") : "glm4";
    std::string ft = ftype_label(f.get_int("general.file_type", -1));
    if (ft.empty()) ft = upper(m.type);
    m.desc = a + " " + params_label(m.params) + " " + ft;
    return m;
}

// llama-bench's size cell: MiB below a GiB, GiB above.
std::string size_label(uint64_t bytes) {
    const double b = static_cast<double>(bytes);
    if (b < 1024.0 * 1024 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024));
    return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
}

}  // namespace pipelm::launcher::bench
