// The HTTP side of `pipelm serve` (cpp-httplib): the OpenAI routes, the API key, server-sent
// events, client disconnects, /health and /metrics. It binds and answers /health (503) while the
// model loads; generation requests go to the Scheduler once ready() is called. One HTTP thread
// serves one connection; a request holds its thread until its answer is sent.
#pragma once
#include <memory>
#include <string>

#include "runtime/pipeline/scheduler.h"
#include "runtime/tokenizer/tokenizer.h"

namespace pipelm::launcher {

struct HttpOptions {
    std::string host = "127.0.0.1";
    int port = 8080;              // 0: any free port
    std::string api_key;          // "" = no key needed
    size_t max_body = 1 << 20;    // bytes; larger bodies get 413
    int threads = 16;             // HTTP threads (connections served at once)
    std::string model_id;
};

class HttpServer {
public:
    explicit HttpServer(HttpOptions opt);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // Binds host:port and starts serving on a background thread; returns the port. Throws
    // Error{kIo} naming --host / --port when the address cannot be bound.
    int start();
    // From now on generation requests go to `sch` (both must outlive stop()); n_ctx for checks.
    void ready(pipeline::Scheduler& sch, const tok::Tokenizer& tk, int n_ctx);
    // Stops accepting, ends open streams (the scheduler must be closed first) and joins every thread.
    void stop();
    // The listening thread ended by itself (the socket failed).
    bool failed() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pipelm::launcher
