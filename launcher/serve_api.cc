#include "launcher/serve_api.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <random>

#include "runtime/base/error.h"

namespace pipelm::launcher::serve {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxStops = 4;  // as OpenAI
const char kBos[] = "[gMASK]<sop>";

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ApiError bad(const std::string& param, const std::string& message) {
    return ApiError(400, "invalid_request_error", message, param);
}

const char* type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::null: return "null";
        case json::value_t::object: return "an object";
        case json::value_t::array: return "an array";
        case json::value_t::string: return "a string";
        case json::value_t::boolean: return "a boolean";
        case json::value_t::number_integer:
        case json::value_t::number_unsigned: return "an integer";
        case json::value_t::number_float: return "a number";
        case json::value_t::binary:
        case json::value_t::discarded: break;
    }
    return "something else";
}

// The field `name` of `o` when present and not null.
const json* field(const json& o, const char* name) {
    auto it = o.find(name);
    return it == o.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& o, const char* name, double fallback, double lo, double hi) {
    const json* v = field(o, name);
    if (!v) return fallback;
    if (!v->is_number()) throw bad(name, std::string("'") + name + "' must be a number, got " + type_name(*v));
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi))
        throw bad(name, std::string("'") + name + "' must be between " + dump(lo) + " and " + dump(hi) + ", got " + dump(x));
    return x;
}

// An integer (a float with an integral value counts) in [lo, hi].
int64_t integer(const json& o, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
    const json* v = field(o, name);
    if (!v) return fallback;
    double x = 0;
    if (v->is_number_unsigned()) x = static_cast<double>(v->get<uint64_t>());
    else if (v->is_number()) x = v->get<double>();
    else throw bad(name, std::string("'") + name + "' must be an integer, got " + type_name(*v));
    if (x != std::floor(x)) throw bad(name, std::string("'") + name + "' must be an integer, got " + dump(*v));
    if (x < static_cast<double>(lo) || x > static_cast<double>(hi))
        throw bad(name, std::string("'") + name + "' must be between " + std::to_string(lo) + " and " +
                            std::to_string(hi) + ", got " + dump(*v));
    return static_cast<int64_t>(x);
}

bool boolean(const json& o, const char* name, bool fallback) {
    const json* v = field(o, name);
    if (!v) return fallback;
    if (!v->is_boolean()) throw bad(name, std::string("'") + name + "' must be a boolean, got " + type_name(*v));
    return v->get<bool>();
}

// Message content: a string, or a list of {"type": "text", "text": ...} parts.
std::string content_text(const json& m, size_t i) {
    const std::string p = "messages[" + std::to_string(i) + "].content";
    const json* c = field(m, "content");
    if (!c) return "";
    if (c->is_string()) return c->get<std::string>();
    if (!c->is_array()) throw bad(p, "'" + p + "' must be a string or a list of text parts, got " + type_name(*c));
    std::string out;
    for (const json& part : *c) {
        const json* t = part.is_object() ? field(part, "type") : nullptr;
        if (!t || !t->is_string() || *t != "text" || !part.contains("text") || !part["text"].is_string())
            throw bad(p, "'" + p + "': only parts of type 'text' with a string 'text' are supported");
        out += part["text"].get<std::string>();
    }
    return out;
}

std::string chat_prompt(const json& body) {
    const json* msgs = field(body, "messages");
    if (!msgs) throw bad("messages", "'messages' is required");
    if (!msgs->is_array() || msgs->empty())
        throw bad("messages", std::string("'messages' must be a non-empty list, got ") + type_name(*msgs));
    std::vector<tok::ChatMessage> chat;
    for (size_t i = 0; i < msgs->size(); ++i) {
        const json& m = (*msgs)[i];
        const std::string p = "messages[" + std::to_string(i) + "]";
        if (!m.is_object()) throw bad(p, "'" + p + "' must be an object, got " + type_name(m));
        const json* role = field(m, "role");
        if (!role || !role->is_string()) throw bad(p + ".role", "'" + p + ".role' must be a string");
        std::string r = role->get<std::string>();
        if (r == "developer") r = "system";
        if (r != "system" && r != "user" && r != "assistant")
            throw bad(p + ".role", "'" + p + ".role' is '" + r + "': use system, developer, user or assistant");
        chat.push_back({r, content_text(m, i)});
    }
    return tok::apply_chat_template(chat, /*add_generation_prompt=*/true);
}

std::string completion_prompt(const json& body) {
    const json* p = field(body, "prompt");
    if (!p) throw bad("prompt", "'prompt' is required");
    std::string text;
    if (p->is_string()) text = p->get<std::string>();
    else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) text = (*p)[0].get<std::string>();
    else throw bad("prompt", std::string("'prompt' must be a string (or a list of one string), got ") + type_name(*p));
    if (text.rfind("[gMASK]", 0) != 0) text = kBos + text;
    return text;
}

std::vector<std::string> stops(const json& body) {
    const json* s = field(body, "stop");
    if (!s) return {};
    std::vector<std::string> out;
    if (s->is_string()) out.push_back(s->get<std::string>());
    else if (s->is_array() && s->size() <= kMaxStops)
        for (const json& x : *s) {
            if (!x.is_string()) throw bad("stop", "'stop' must hold strings");
            out.push_back(x.get<std::string>());
        }
    else throw bad("stop", "'stop' must be a string or a list of up to 4 strings");
    for (const auto& x : out)
        if (x.empty()) throw bad("stop", "'stop' strings must not be empty");
    return out;
}

uint64_t random_seed() {
    static std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

json usage_object(const Usage& u) {
    return {{"prompt_tokens", u.prompt_tokens},
            {"completion_tokens", u.completion_tokens},
            {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json base(Endpoint ep, const std::string& id, int64_t created, const std::string& model, bool chunk) {
    const char* object = ep == Endpoint::kChat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
    return {{"id", id}, {"object", object}, {"created", created}, {"model", model}, {"system_fingerprint", "pipelm"}};
}

json finish_value(const Choice& c) { return c.finish_reason.empty() ? json(nullptr) : json(c.finish_reason); }

}  // namespace

std::string error_json(const ApiError& e) {
    return dump({{"error",
                  {{"message", e.what()},
                   {"type", e.type},
                   {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                   {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}});
}

ParsedRequest parse_request(Endpoint ep, const std::string& body, const tok::Tokenizer& tk, const ApiConfig& cfg) {
    json j;
    try {
        j = json::parse(body);
    } catch (const json::parse_error& e) {
        throw bad("", std::string("the body is not valid JSON: ") + e.what());
    }
    if (!j.is_object()) throw bad("", std::string("the body must be a JSON object, got ") + type_name(j));
    ParsedRequest r;
    r.endpoint = ep;
    if (const json* m = field(j, "model")) {
        if (!m->is_string()) throw bad("model", std::string("'model' must be a string, got ") + type_name(*m));
        if (*m != cfg.model_id)
            throw ApiError(404, "invalid_request_error",
                           "the model '" + m->get<std::string>() + "' does not exist: this server serves '" +
                               cfg.model_id + "' (GET /v1/models)",
                           "model", "model_not_found");
    }
    if (integer(j, "n", 1, 1, 1) != 1) throw bad("n", "'n' must be 1");
    r.stream = boolean(j, "stream", false);
    if (const json* so = field(j, "stream_options")) {
        if (!so->is_object()) throw bad("stream_options", "'stream_options' must be an object");
        r.include_usage = boolean(*so, "include_usage", false);
    }
    r.stop = stops(j);
    auto& sp = r.gen.sampler;
    sp.temperature = static_cast<float>(number(j, "temperature", 1.0, 0.0, 2.0));
    sp.top_p = static_cast<float>(number(j, "top_p", 1.0, 0.0, 1.0));
    sp.top_k = static_cast<int>(integer(j, "top_k", 0, 0, std::numeric_limits<int32_t>::max()));
    sp.min_p = static_cast<float>(number(j, "min_p", 0.0, 0.0, 1.0));
    sp.repeat_penalty = static_cast<float>(number(j, "repeat_penalty", 1.0, 1e-3, 100.0));
    sp.repeat_last_n = static_cast<int>(integer(j, "repeat_last_n", 64, 0, pipeline::kMaxHistory));
    // A seed is a JSON integer; negative ones wrap like the OpenAI SDKs' 64-bit values.
    sp.seed = field(j, "seed") ? static_cast<uint64_t>(integer(j, "seed", 0, std::numeric_limits<int64_t>::min(),
                                                               std::numeric_limits<int64_t>::max()))
                               : random_seed();
    r.gen.ignore_eos = boolean(j, "ignore_eos", false);
    const char* max_name = field(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    const int64_t max_tokens = integer(j, max_name, -1, std::numeric_limits<int64_t>::min(),
                                       std::numeric_limits<int64_t>::max());
    if (field(j, max_name) && max_tokens < 1)
        throw bad(max_name, std::string("'") + max_name + "' must be at least 1, got " + std::to_string(max_tokens));

    const std::string prompt = ep == Endpoint::kChat ? chat_prompt(j) : completion_prompt(j);
    r.gen.prompt = tk.encode(prompt, /*parse_special=*/true);
    const int64_t n = static_cast<int64_t>(r.gen.prompt.size());
    if (n >= cfg.n_ctx)
        throw ApiError(400, "invalid_request_error",
                       "the prompt has " + std::to_string(n) + " tokens and the context holds " +
                           std::to_string(cfg.n_ctx) + " (one more is needed for the answer): shorten it, or start " +
                           "the server with a larger --ctx",
                       ep == Endpoint::kChat ? "messages" : "prompt", "context_length_exceeded");
    if (max_tokens > 0 && n + max_tokens > cfg.n_ctx)
        throw ApiError(400, "invalid_request_error",
                       "the context holds " + std::to_string(cfg.n_ctx) + " tokens, and " + std::to_string(n) +
                           " in the prompt plus " + std::to_string(max_tokens) + " in " + max_name +
                           " exceed it: lower " + max_name,
                       max_name, "context_length_exceeded");
    r.gen.max_tokens = static_cast<int>(max_tokens > 0 ? max_tokens : cfg.n_ctx - n);
    return r;
}

// ---- TextStream -------------------------------------------------------------------------------

TextStream::TextStream(const tok::Tokenizer& tk, std::vector<std::string> stop, bool strip_first_newline)
    : dec_(tk), stop_(std::move(stop)), strip_(strip_first_newline) {}

std::string TextStream::push(int32_t token) {
    if (stopped_) return "";
    held_ += dec_.push(token);
    return release(false);
}

std::string TextStream::finish() {
    if (stopped_) return "";
    held_ += dec_.finish();
    return release(true);
}

std::string TextStream::release(bool all) {
    if (strip_ && !started_ && !held_.empty()) {
        if (held_[0] == '\n') held_.erase(0, 1);
        started_ = true;
    }
    size_t cut = std::string::npos;
    for (const auto& s : stop_) cut = std::min(cut, held_.find(s));
    std::string out;
    if (cut != std::string::npos) {
        out = held_.substr(0, cut);
        held_.clear();
        stopped_ = true;
        return out;
    }
    // Keep back the longest end of the text that a stop string starts with.
    size_t keep = 0;
    if (!all)
        for (const auto& s : stop_)
            for (size_t l = std::min(s.size() - 1, held_.size()); l > keep; --l)
                if (held_.compare(held_.size() - l, l, s, 0, l) == 0) {
                    keep = l;
                    break;
                }
    out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
}

// ---- answers ----------------------------------------------------------------------------------

std::string answer_json(Endpoint ep, const std::string& id, int64_t created, const std::string& model,
                        const Choice& c, const Usage& u) {
    json j = base(ep, id, created, model, false);
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_value(c)}};
    if (ep == Endpoint::kChat) choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else choice["text"] = c.text;
    j["choices"] = json::array({choice});
    j["usage"] = usage_object(u);
    return dump(j);
}

std::string chunk_event(Endpoint ep, const std::string& id, int64_t created, const std::string& model,
                        const Choice& c, bool first) {
    json j = base(ep, id, created, model, true);
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_value(c)}};
    if (ep == Endpoint::kChat) {
        json delta = json::object();
        if (first) delta["role"] = "assistant";
        if (first || c.finish_reason.empty() || !c.text.empty()) delta["content"] = c.text;
        choice["delta"] = delta;
    } else {
        choice["text"] = c.text;
    }
    j["choices"] = json::array({choice});
    return "data: " + dump(j) + "\n\n";
}

std::string usage_event(Endpoint ep, const std::string& id, int64_t created, const std::string& model, const Usage& u) {
    json j = base(ep, id, created, model, true);
    j["choices"] = json::array();
    j["usage"] = usage_object(u);
    return "data: " + dump(j) + "\n\n";
}

std::string model_json(const std::string& model, int64_t created) {
    return dump({{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "pipelm"}});
}

std::string models_json(const std::string& model, int64_t created) {
    return dump({{"object", "list"},
                 {"data", json::array({{{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "pipelm"}}})}});
}

}  // namespace pipelm::launcher::serve
