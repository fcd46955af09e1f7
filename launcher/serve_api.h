// The OpenAI API of `pipelm serve`, apart from HTTP: a request body is parsed and checked into a
// GenRequest (every bad input is an ApiError with its 4xx status and OpenAI error type, never a
// crash), answers are rendered as OpenAI JSON objects and server-sent-event chunks, and generated
// text is cut at the request's stop strings.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/pipeline/scheduler.h"
#include "runtime/tokenizer/tokenizer.h"

namespace pipelm::launcher::serve {

// {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError : std::runtime_error {
    ApiError(int status, std::string type, const std::string& message, std::string param = "", std::string code = "")
        : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)),
          code(std::move(code)) {}
    int status;
    std::string type;  // invalid_request_error, authentication_error, rate_limit_error, server_error, ...
    std::string param;
    std::string code;
};
std::string error_json(const ApiError& e);

enum class Endpoint { kChat, kCompletion };

struct ApiConfig {
    std::string model_id;  // what /v1/models lists and requests must name (when they name one)
    int n_ctx = 0;         // positions per slot
};

struct ParsedRequest {
    Endpoint endpoint = Endpoint::kChat;
    pipeline::GenRequest gen;
    bool stream = false;
    bool include_usage = false;  // stream_options.include_usage
    std::vector<std::string> stop;
};

// Parses a POST body for /v1/chat/completions (messages: system, developer (as system), user,
// assistant; content as a string or text parts; the GLM-4 chat template) or /v1/completions
// (prompt: a string or a list of one string; "[gMASK]<sop>" is put in front unless the prompt
// starts with "[gMASK]"). Fields: model, max_tokens / max_completion_tokens, temperature, top_p,
// top_k, min_p, seed, stop (a string or up to 4), stream, stream_options.include_usage, n (1 only),
// and the extensions repeat_penalty, repeat_last_n, ignore_eos. Unknown fields are ignored, as
// OpenAI clients send some that do not apply. Defaults are OpenAI's: temperature 1, top_p 1, no
// top_k / min_p, a random seed, max_tokens = the rest of the context. Throws ApiError.
ParsedRequest parse_request(Endpoint ep, const std::string& body, const tok::Tokenizer& tk, const ApiConfig& cfg);

// Turns sampled tokens into text to send: complete UTF-8 only, nothing from a stop string on
// (and nothing that might still become one), and for chat replies without the newline GLM-4
// writes right after <|assistant|>.
class TextStream {
public:
    TextStream(const tok::Tokenizer& tk, std::vector<std::string> stop, bool strip_first_newline);
    std::string push(int32_t token);  // text that can be sent now
    std::string finish();             // what was held back, when generation ended otherwise
    bool stopped() const { return stopped_; }  // a stop string was found: generation should end

private:
    std::string release(bool all);
    tok::StreamDecoder dec_;
    std::vector<std::string> stop_;
    std::string held_;
    bool strip_ = false;
    bool started_ = false;
    bool stopped_ = false;
};

// What one finished (or in-progress) choice carries into an answer.
struct Choice {
    std::string text;
    std::string finish_reason;  // "stop", "length" or "" (stream chunks before the end)
};
struct Usage {
    int prompt_tokens = 0, completion_tokens = 0;
};

// A complete (non-streamed) answer.
std::string answer_json(Endpoint ep, const std::string& id, int64_t created, const std::string& model,
                        const Choice& c, const Usage& u);
// One SSE event ("data: {...}\n\n"): a chunk with a text delta (one per generated token, the text
// possibly empty: incomplete UTF-8 or a held-back stop-string prefix) or the finish reason; for
// chat, first=true gives the opening chunk with the assistant role and empty content.
std::string chunk_event(Endpoint ep, const std::string& id, int64_t created, const std::string& model,
                        const Choice& c, bool first);
// The usage chunk of stream_options.include_usage (no choices).
std::string usage_event(Endpoint ep, const std::string& id, int64_t created, const std::string& model, const Usage& u);
// GET /v1/models and /v1/models/{id}.
std::string models_json(const std::string& model, int64_t created);
std::string model_json(const std::string& model, int64_t created);

}  // namespace pipelm::launcher::serve
