#include "runtime/tokenizer/hf_vocab.h"

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace pipelm::tok {
namespace {

using json = nlohmann::json;

json read_json(const std::string& path, bool required) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        if (required) PIPELM_THROW(ErrorCode::kIo, path, ": cannot open (an HF folder needs tokenizer.json)");
        return json();
    }
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) PIPELM_THROW(ErrorCode::kFormat, path, ": not a JSON object");
    return j;
}

// A token named in tokenizer_config.json: a string or {"content": string}.
std::string token_text(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return "";
}

struct Vocab {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::map<std::string, int32_t> added;  // added token text -> id
};

Vocab read_vocab(const std::string& path, const json& tj, int64_t n_vocab) {
    const json& model = tj.contains("model") ? tj["model"] : json();
    if (!model.is_object() || !model.contains("vocab") || !model["vocab"].is_object())
        PIPELM_THROW(ErrorCode::kFormat, path, ": no model.vocab object");
    if (model.value("type", std::string("BPE")) != "BPE")
        PIPELM_THROW(ErrorCode::kUnsupported, path, ": tokenizer model '", model.value("type", std::string()),
                     "' is not supported (GLM-4 uses a byte-level BPE)");
    Vocab v;
    v.tokens.resize(static_cast<size_t>(n_vocab));
    std::vector<bool> have(static_cast<size_t>(n_vocab), false);
    v.types.assign(static_cast<size_t>(n_vocab), kTokenNormal);
    auto put = [&](const std::string& text, const json& id, int32_t type) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= n_vocab)
            PIPELM_THROW(ErrorCode::kFormat, path, ": token '", text, "' has id ", id.dump(),
                         " outside config.json's vocab_size ", n_vocab);
        const auto i = static_cast<size_t>(id.get<int64_t>());
        v.tokens[i] = text;
        v.types[i] = type;
        have[i] = true;
    };
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) put(it.key(), it.value(), kTokenNormal);
    if (tj.contains("added_tokens") && tj["added_tokens"].is_array())
        for (const json& a : tj["added_tokens"]) {
            if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
                PIPELM_THROW(ErrorCode::kFormat, path, ": an added_tokens entry lacks content or id");
            const std::string text = a["content"].get<std::string>();
            const bool looks_special = text.size() >= 4 && text.rfind("<|", 0) == 0 &&
                                       text.compare(text.size() - 2, 2, "|>") == 0;
            put(text, a["id"], a.value("special", false) || looks_special ? kTokenControl : kTokenUserDefined);
            v.added[text] = static_cast<int32_t>(a["id"].get<int64_t>());
        }
    for (size_t i = 0; i < have.size(); ++i)
        if (!have[i]) {
            v.tokens[i] = "[PAD" + std::to_string(i) + "]";
            v.types[i] = kTokenUnused;
        }
    return v;
}

std::vector<std::string> read_merges(const std::string& path, const json& model) {
    std::vector<std::string> out;
    if (!model.contains("merges")) return out;
    if (!model["merges"].is_array()) PIPELM_THROW(ErrorCode::kFormat, path, ": model.merges is not an array");
    for (const json& m : model["merges"]) {
        if (m.is_string()) out.push_back(m.get<std::string>());
        else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
            out.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
        else PIPELM_THROW(ErrorCode::kFormat, path, ": merge ", out.size(), " is neither \"A B\" nor [\"A\", \"B\"]");
    }
    return out;
}

}  // namespace

void hf_vocab_to_gguf(const std::string& dir, int64_t n_vocab, gguf::GgufWriter& w) {
    const std::string tpath = dir + "/tokenizer.json", cpath = dir + "/tokenizer_config.json";
    const json tj = read_json(tpath, true);
    const json cj = read_json(cpath, false);
    const Vocab v = read_vocab(tpath, tj, n_vocab);
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string("tokenizer.ggml.pre", "glm4");
    w.set_string_array("tokenizer.ggml.tokens", v.tokens);
    w.set_i32_array("tokenizer.ggml.token_type", v.types);
    w.set_string_array("tokenizer.ggml.merges", read_merges(tpath, tj["model"]));
    auto id_of = [&](const std::string& text) {
        auto it = v.added.find(text);
        return it == v.added.end() ? -1 : it->second;
    };
    const int32_t eos = id_of("<|endoftext|>");
    int32_t pad = cj.is_object() && cj.contains("pad_token") ? id_of(token_text(cj["pad_token"])) : -1;
    if (pad < 0) pad = eos;
    const std::pair<const char*, int32_t> ids[] = {
        {"tokenizer.ggml.eos_token_id", eos},           {"tokenizer.ggml.padding_token_id", pad},
        {"tokenizer.ggml.eot_token_id", id_of("<|user|>")}, {"tokenizer.ggml.unknown_token_id", eos},
        {"tokenizer.ggml.bos_token_id", id_of("[gMASK]")},
    };
    for (const auto& [key, id] : ids)
        if (id >= 0) w.set_u32(key, static_cast<uint32_t>(id));
    if (cj.is_object() && cj.contains("chat_template")) {
        const json& t = cj["chat_template"];
        if (t.is_string()) w.set_string("tokenizer.chat_template", t.get<std::string>());
        else if (t.is_array())  // [{"name": "default", "template": "..."}, ...]
            for (const json& e : t)
                if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") &&
                    e["template"].is_string())
                    w.set_string("tokenizer.chat_template", e["template"].get<std::string>());
    }
}

}  // namespace pipelm::tok
