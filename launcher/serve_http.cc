#include "launcher/serve_http.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "launcher/serve_api.h"
#include "runtime/base/error.h"
#include "runtime/base/log.h"

namespace pipelm::launcher {
namespace {

using serve::ApiError;
using serve::Endpoint;
using Req = httplib::Request;
using Res = httplib::Response;

// How often a request waiting for tokens looks at its client: a client that went away is noticed
// within this time, and its slot is free at the scheduler's next step.
constexpr std::chrono::milliseconds kPoll(20);

// The inode of the TCP connection between local port `lport` and the remote `raddr`:`rport`, from
// the kernel's socket tables (/proc/net/tcp, tcp6); 0 when absent. Addresses there are the
// 32-bit words of the address in network order, printed as host-order hex.
uint64_t tcp_inode(int lport, const std::string& raddr, int rport) {
    uint32_t want[4] = {0, 0, 0, 0};
    in_addr a4{};
    in6_addr a6{};
    int words = 0;
    if (::inet_pton(AF_INET, raddr.c_str(), &a4) == 1) {
        want[0] = a4.s_addr;
        words = 1;
    } else if (::inet_pton(AF_INET6, raddr.c_str(), &a6) == 1) {
        std::memcpy(want, &a6, sizeof want);
        words = 4;
    }
    for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(table);
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line)) {
            std::istringstream ss(line);
            std::string sl, local, remote, st, queues, timer, retr, uid, timeout;
            uint64_t inode = 0;
            ss >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
            const size_t lc = local.find(':'), rc = remote.find(':');
            if (!ss || lc == std::string::npos || rc == std::string::npos) continue;
            if (std::strtol(local.c_str() + lc + 1, nullptr, 16) != lport ||
                std::strtol(remote.c_str() + rc + 1, nullptr, 16) != rport)
                continue;
            const std::string hex = remote.substr(0, rc);
            bool same = true;  // an address we cannot parse: the ports decide
            if (words > 0) {
                same = hex.size() == static_cast<size_t>(8 * words);
                for (int w = 0; same && w < words; ++w)
                    same = static_cast<uint32_t>(std::strtoul(hex.substr(8 * w, 8).c_str(), nullptr, 16)) == want[w];
            }
            if (same) return inode;
        }
    }
    return 0;
}

// The socket of the connection a request came on, or -1. cpp-httplib 0.11 gives a handler neither
// the socket nor a way to learn that the client went away before a write to it fails, so the
// connection's inode is looked up by its addresses and then the descriptor that links to it
// (path lookups only: the other threads' descriptors are never touched).
int connection_fd(const Req& req) {
    const uint64_t inode = tcp_inode(req.local_port, req.remote_addr, req.remote_port);
    if (inode == 0) return -1;
    const std::string target = "socket:[" + std::to_string(inode) + "]";
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    int found = -1;
    char link[64];
    while (dirent* e = ::readdir(d)) {
        const std::string path = std::string("/proc/self/fd/") + e->d_name;
        const ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
        if (n > 0 && target.compare(0, std::string::npos, link, static_cast<size_t>(n)) == 0) {
            found = std::atoi(e->d_name);
            break;
        }
    }
    ::closedir(d);
    return found;
}

// True once the client has closed its end (or the connection broke).
bool peer_closed(int fd) {
    if (fd < 0) return false;
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void send_error(Res& res, const ApiError& e, int retry_after_s = 0) {
    res.status = e.status;
    res.set_content(serve::error_json(e), "application/json");
    if (retry_after_s > 0) res.set_header("Retry-After", std::to_string(retry_after_s));
}

// Constant-time comparison (the key is a secret).
bool same_secret(const std::string& a, const std::string& b) {
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    return diff == 0;
}

// One generation request in progress, as the HTTP thread sees it.
struct Gen {
    Gen(Endpoint e, std::shared_ptr<pipeline::Sequence> s, serve::TextStream t) : ep(e), seq(std::move(s)), text(std::move(t)) {}
    Endpoint ep;
    std::shared_ptr<pipeline::Sequence> seq;
    serve::TextStream text;
    std::string id, model;
    int64_t created = 0;
    int n_completion = 0;
    bool include_usage = false;
    int fd = -1;
    bool first = true;
};

// What one look at a sequence gave: the text of each new token (what can be sent: possibly empty),
// and whether (and how) it ended.
struct Advance {
    std::vector<std::string> pieces;
    std::string text() const {
        std::string t;
        for (const auto& p : pieces) t += p;
        return t;
    }
    std::string finish;  // "stop" / "length" when it ended normally
    std::optional<ApiError> error;
    bool gone = false;  // the client went away
};

Advance advance(Gen& g) {
    Advance a;
    pipeline::SeqUpdate u;
    if (!g.seq->wait(&u, kPoll)) {
        if (peer_closed(g.fd)) {
            g.seq->cancel();
            a.gone = true;
        }
        return a;
    }
    for (int32_t t : u.tokens) {
        ++g.n_completion;
        a.pieces.push_back(g.text.push(t));
        if (g.text.stopped()) {
            g.seq->cancel(pipeline::Finish::kStop);  // the client's stop string: the slot is free at the next step
            a.finish = "stop";
            return a;
        }
    }
    switch (u.finish) {
        case pipeline::Finish::kNone: break;
        case pipeline::Finish::kStop:
        case pipeline::Finish::kLength: {
            const std::string rest = g.text.finish();
            if (!rest.empty()) a.pieces.push_back(rest);
            a.finish = pipeline::finish_name(u.finish);
            break;
        }
        case pipeline::Finish::kCancelled:
            a.error = ApiError(503, "server_error", "the server is shutting down");
            break;
        case pipeline::Finish::kError:
            a.error = ApiError(500, "server_error", "the pipeline failed: " + u.error);
            break;
    }
    return a;
}

std::string route_of(const std::string& path) {
    for (const char* r : {"/v1/chat/completions", "/v1/completions", "/health", "/metrics"})
        if (path == r) return r;
    if (path.rfind("/v1/models", 0) == 0) return "/v1/models";
    return "other";
}

void histogram(std::ostringstream& os, const char* name, const char* help, const pipeline::Histogram& h) {
    os << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
    for (size_t i = 0; i < h.bounds.size(); ++i) os << name << "_bucket{le=\"" << h.bounds[i] << "\"} " << h.counts[i] << "\n";
    os << name << "_bucket{le=\"+Inf\"} " << h.count << "\n" << name << "_sum " << h.sum << "\n" << name << "_count " << h.count << "\n";
}

void metric(std::ostringstream& os, const char* name, const char* type, const char* help, double v) {
    os << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << v << "\n";
}

// cpp-httplib 0.11 listens with a backlog of 5: a burst of clients connecting at once (16
// benchmark clients) overflows it and the kernel drops SYNs, which clients resend only after a
// second. The backlog of a listening socket can be raised by calling listen() again.
class Server : public httplib::Server {
public:
    void raise_backlog() { ::listen(svr_sock_, SOMAXCONN); }
};

}  // namespace

struct HttpServer::Impl {
    explicit Impl(HttpOptions o) : opt(std::move(o)) {}
    HttpOptions opt;
    Server svr;
    std::thread thread;
    std::atomic<bool> ended{false}, stopping{false};
    std::atomic<pipeline::Scheduler*> sch{nullptr};
    const tok::Tokenizer* tk = nullptr;
    int n_ctx = 0;
    const int64_t created = static_cast<int64_t>(std::time(nullptr));
    std::atomic<uint64_t> next_id{0};
    std::mutex mu;  // guards the counters below
    std::map<std::pair<std::string, int>, uint64_t> responses;  // (route, status) -> count
    uint64_t disconnects = 0;

    void routes();
    void generate(Endpoint ep, const Req& req, Res& res);
    void stream(std::shared_ptr<Gen> g, Res& res);
    void gone() {
        std::lock_guard<std::mutex> lock(mu);
        ++disconnects;
    }
    std::string metrics();
};

void HttpServer::Impl::routes() {
    svr.set_pre_routing_handler([this](const Req& req, Res& res) {
        if (opt.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
        if (same_secret(req.get_header_value("Authorization"), "Bearer " + opt.api_key))
            return httplib::Server::HandlerResponse::Unhandled;
        send_error(res, ApiError(401, "authentication_error",
                                 "invalid API key: send the key the server was started with (--api-key-file) as "
                                 "'Authorization: Bearer KEY'",
                                 "", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
    });
    svr.set_error_handler(httplib::Server::HandlerWithResponse([](const Req& req, Res& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // an answer of ours
        if (res.status == 404)
            send_error(res, ApiError(404, "invalid_request_error", "no route " + req.method + " " + req.path +
                                                                       " (see /v1/models, /v1/chat/completions, "
                                                                       "/v1/completions, /health, /metrics)"));
        else if (res.status == 413)
            send_error(res, ApiError(413, "invalid_request_error",
                                     "the request body is over the server's limit (--max-body)"));
        else
            send_error(res, ApiError(res.status, "invalid_request_error", "bad HTTP request"));
        return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_exception_handler([](const Req&, Res& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, "server_error", "internal error: " + what));
    });
    svr.set_logger([this](const Req& req, const Res& res) {
        std::lock_guard<std::mutex> lock(mu);
        ++responses[{route_of(req.path), res.status}];
    });
    svr.Get("/health", [this](const Req&, Res& res) {
        const bool ok = sch.load() != nullptr && !stopping;
        res.status = ok ? 200 : 503;
        res.set_content(ok ? "{\"status\":\"ok\"}" : stopping ? "{\"status\":\"stopping\"}" : "{\"status\":\"loading\"}",
                        "application/json");
    });
    svr.Get("/metrics", [this](const Req&, Res& res) { res.set_content(metrics(), "text/plain; version=0.0.4"); });
    svr.Get("/v1/models", [this](const Req&, Res& res) {
        res.set_content(serve::models_json(opt.model_id, created), "application/json");
    });
    svr.Get(R"(/v1/models/(.+))", [this](const Req& req, Res& res) {
        if (req.matches[1] == opt.model_id) return res.set_content(serve::model_json(opt.model_id, created), "application/json");
        send_error(res, ApiError(404, "invalid_request_error", "the model '" + req.matches[1].str() + "' does not exist",
                                 "model", "model_not_found"));
    });
    svr.Post("/v1/chat/completions", [this](const Req& req, Res& res) { generate(Endpoint::kChat, req, res); });
    svr.Post("/v1/completions", [this](const Req& req, Res& res) { generate(Endpoint::kCompletion, req, res); });
}

void HttpServer::Impl::generate(Endpoint ep, const Req& req, Res& res) {
    pipeline::Scheduler* s = sch.load();
    if (!s || stopping) {
        send_error(res, ApiError(503, "server_error", s ? "the server is shutting down"
                                                        : "the model is still loading (GET /health answers 200 when ready)"),
                   1);
        return;
    }
    serve::ParsedRequest pr;
    std::shared_ptr<pipeline::Sequence> seq;
    try {
        pr = serve::parse_request(ep, req.body, *tk, {opt.model_id, n_ctx});
        seq = s->submit(pr.gen);
    } catch (const ApiError& e) {
        return send_error(res, e);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::kCancelled) return send_error(res, ApiError(503, "server_error", e.what()), 1);
        return send_error(res, ApiError(400, "invalid_request_error", e.what()));
    }
    if (!seq) {
        const auto& o = s->options();
        return send_error(res, ApiError(429, "rate_limit_error",
                                        "all " + std::to_string(o.n_slots) + " sequence slots are busy and " +
                                            std::to_string(o.max_queue) + " requests already wait (--parallel, "
                                            "--queue-size): retry later",
                                        "", "queue_full"),
                          s->retry_after_s());
    }
    auto g = std::make_shared<Gen>(ep, seq, serve::TextStream(*tk, pr.stop, ep == Endpoint::kChat));
    g->id = (ep == Endpoint::kChat ? "chatcmpl-" : "cmpl-") + std::to_string(created) + "-" + std::to_string(next_id++);
    g->model = opt.model_id;
    g->created = static_cast<int64_t>(std::time(nullptr));
    g->include_usage = pr.include_usage;
    g->fd = connection_fd(req);
    if (pr.stream) return stream(g, res);
    serve::Choice c;
    for (;;) {
        Advance a = advance(*g);
        c.text += a.text();
        if (a.gone) {
            gone();
            res.status = 499;  // nobody reads it: for the log and the metrics only
            return;
        }
        if (a.error) return send_error(res, *a.error);
        if (!a.finish.empty()) {
            c.finish_reason = a.finish;
            break;
        }
    }
    res.set_content(serve::answer_json(ep, g->id, g->created, g->model, c, {seq->n_prompt(), g->n_completion}),
                    "application/json");
}

void HttpServer::Impl::stream(std::shared_ptr<Gen> g, Res& res) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, g](size_t, httplib::DataSink& sink) {
            auto put = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
            bool ok = true;
            if (g->first && g->ep == Endpoint::kChat) ok = put(serve::chunk_event(g->ep, g->id, g->created, g->model, {}, true));
            g->first = false;
            Advance a = advance(*g);
            if (a.gone) {
                gone();
                return false;
            }
            for (size_t i = 0; ok && i < a.pieces.size(); ++i)  // one event per token, as it came
                ok = put(serve::chunk_event(g->ep, g->id, g->created, g->model, {a.pieces[i], ""}, false));
            if (ok && a.error) ok = put("data: " + serve::error_json(*a.error) + "\n\n") && put("data: [DONE]\n\n");
            if (ok && !a.finish.empty()) {
                ok = put(serve::chunk_event(g->ep, g->id, g->created, g->model, {"", a.finish}, false));
                if (ok && g->include_usage)
                    ok = put(serve::usage_event(g->ep, g->id, g->created, g->model, {g->seq->n_prompt(), g->n_completion}));
                if (ok) ok = put("data: [DONE]\n\n");
            }
            if (!ok) {  // the write failed: the client is gone
                g->seq->cancel();
                gone();
                return false;
            }
            if (a.error || !a.finish.empty()) sink.done();
            return true;
        },
        [g](bool) { g->seq->cancel(); });  // no-op when it ended; frees the slot when the stream broke off
}

std::string HttpServer::Impl::metrics() {
    std::ostringstream os;
    {
        std::lock_guard<std::mutex> lock(mu);
        os << "# HELP pipelm_requests_total HTTP responses by route and status code.\n"
              "# TYPE pipelm_requests_total counter\n";
        for (const auto& kv : responses)
            os << "pipelm_requests_total{route=\"" << kv.first.first << "\",code=\"" << kv.first.second << "\"} "
               << kv.second << "\n";
        metric(os, "pipelm_client_disconnects_total", "counter", "Clients that went away before their answer ended.",
               static_cast<double>(disconnects));
    }
    pipeline::Scheduler* s = sch.load();
    metric(os, "pipelm_ready", "gauge", "1 once the model is loaded and requests are served.", s && !stopping ? 1 : 0);
    if (!s) return os.str();
    const pipeline::SchedulerStats st = s->stats();
    metric(os, "pipelm_queue_depth", "gauge", "Requests waiting for a sequence slot.", st.waiting);
    metric(os, "pipelm_running_sequences", "gauge", "Requests holding a sequence slot.", st.running);
    metric(os, "pipelm_slots_free", "gauge", "Free sequence slots.", st.free_slots);
    metric(os, "pipelm_slots_total", "gauge", "Sequence slots (--parallel).", s->options().n_slots);
    metric(os, "pipelm_requests_accepted_total", "counter", "Generation requests admitted to the queue.", static_cast<double>(st.requests));
    metric(os, "pipelm_requests_rejected_total", "counter", "Generation requests refused with 429 (queue full).", static_cast<double>(st.rejected));
    os << "# HELP pipelm_requests_finished_total Generation requests by how they ended.\n"
          "# TYPE pipelm_requests_finished_total counter\n"
       << "pipelm_requests_finished_total{reason=\"stop\"} " << st.finished_stop << "\n"
       << "pipelm_requests_finished_total{reason=\"length\"} " << st.finished_length << "\n"
       << "pipelm_requests_finished_total{reason=\"cancelled\"} " << st.cancelled << "\n"
       << "pipelm_requests_finished_total{reason=\"error\"} " << st.failed << "\n";
    metric(os, "pipelm_prompt_tokens_total", "counter", "Prompt tokens computed.", static_cast<double>(st.prompt_tokens));
    metric(os, "pipelm_prompt_tokens_reused_total", "counter", "Prompt tokens found in the slot's KV cache (not computed).",
           static_cast<double>(st.prompt_tokens_reused));
    metric(os, "pipelm_generated_tokens_total", "counter", "Tokens generated.", static_cast<double>(st.generated_tokens));
    metric(os, "pipelm_ubatches_total", "counter", "Ubatches sent through the pipeline.", static_cast<double>(st.ubatches));
    metric(os, "pipelm_ubatch_tokens_total", "counter", "Tokens in those ubatches.", static_cast<double>(st.ubatch_tokens));
    metric(os, "pipelm_ubatches_mixed_total", "counter", "Ubatches that carried decode and prompt tokens together.",
           static_cast<double>(st.mixed_ubatches));
    metric(os, "pipelm_recoveries_total", "counter", "Lost stages given to a standby worker (--standby).",
           static_cast<double>(st.recoveries));
    metric(os, "pipelm_recovery_seconds_total", "counter", "Time spent re-forming the pipeline after a loss.",
           st.recovery_s);
    metric(os, "pipelm_recovery_tokens_replayed_total", "counter", "Tokens replayed to rebuild KV caches after a loss.",
           static_cast<double>(st.recovery_tokens_replayed));
    histogram(os, "pipelm_time_to_first_token_seconds", "From arrival to the first generated token.", st.ttft);
    histogram(os, "pipelm_inter_token_latency_seconds", "Between consecutive tokens of a request.", st.itl);
    histogram(os, "pipelm_queue_time_seconds", "From arrival to a sequence slot.", st.queue_time);
    os << "# HELP pipelm_stage_busy_seconds_total Compute seconds of each pipeline stage.\n"
          "# TYPE pipelm_stage_busy_seconds_total counter\n";
    double busy = 0;
    for (size_t i = 0; i < st.stage_busy_s.size(); ++i) {
        os << "pipelm_stage_busy_seconds_total{stage=\"" << i << "\"} " << st.stage_busy_s[i] << "\n";
        busy += st.stage_busy_s[i];
    }
    metric(os, "pipelm_pipeline_active_seconds_total", "counter", "Wall seconds with at least one ubatch in the pipeline.", st.active_s);
    const double bubble = st.active_s > 0 ? std::max(0.0, 1.0 - busy / (st.n_stages * st.active_s)) : 0.0;
    metric(os, "pipelm_pipeline_bubble_ratio", "gauge",
           "1 - stage busy seconds / (stages x active seconds): the share of stage time spent waiting.", bubble);
    metric(os, "pipelm_pipeline_stages", "gauge", "Pipeline stages.", st.n_stages);
    return os.str();
}

HttpServer::HttpServer(HttpOptions opt) : impl_(std::make_unique<Impl>(std::move(opt))) {}

HttpServer::~HttpServer() { stop(); }

int HttpServer::start() {
    Impl& m = *impl_;
    m.routes();
    const int threads = std::max(1, m.opt.threads);
    // httplib takes ownership of the queue it gets from this factory.
    m.svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    m.svr.set_payload_max_length(m.opt.max_body);
    m.svr.set_keep_alive_timeout(5);
    int port = m.opt.port;
    if (port == 0) port = m.svr.bind_to_any_port(m.opt.host);
    else if (!m.svr.bind_to_port(m.opt.host, port)) port = -1;
    if (port <= 0)
        PIPELM_THROW(ErrorCode::kIo, "cannot listen on --host ", m.opt.host, " --port ", m.opt.port,
                     ": the port is in use or the address is not on this host (--port 0 picks a free port)");
    m.svr.raise_backlog();
    m.thread = std::thread([&m] {
        m.svr.listen_after_bind();
        m.ended = true;
    });
    while (!m.svr.is_running() && !m.ended) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return port;
}

void HttpServer::ready(pipeline::Scheduler& sch, const tok::Tokenizer& tk, int n_ctx) {
    impl_->tk = &tk;
    impl_->n_ctx = n_ctx;
    impl_->sch.store(&sch);
}

void HttpServer::stop() {
    Impl& m = *impl_;
    m.stopping = true;
    if (m.thread.joinable()) {
        m.svr.stop();
        m.thread.join();
    }
}

bool HttpServer::failed() const { return impl_->ended && !impl_->stopping; }

}  // namespace pipelm::launcher
