// MPI and TCP wiring of a session, and the TCP worker loop.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "launcher/session.h"
#include "launcher/session_net.h"
#include "launcher/signals.h"
#include "runtime/base/log.h"
#include "runtime/hf/hf_folder.h"
#include "transport/mpi_link.h"
#include "transport/tcp_bootstrap.h"
#include "transport/tcp_link.h"

namespace pipelm::launcher {

namespace net {
namespace {
std::atomic<bool> g_ranks_met{false};       // start_mpi has begun: errors are no longer the command line's
std::atomic<bool> g_error_reported{false};  // agree_after_setup printed this process's error
std::atomic<bool> g_for_the_job{false};     // report_for_the_job()
}  // namespace

void report_for_the_job() { g_for_the_job = true; }

int local_ranks() {
    for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"}) {
        const char* s = std::getenv(v);
        if (s && std::atoi(s) > 0) return std::atoi(s);
    }
    return 1;
}

bool launched_by_mpirun() { return transport::MpiEnv::launched_by_mpirun(); }

std::pair<int, int> mpi_world_from_env() {
    auto num = [](std::initializer_list<const char*> vars) {
        for (const char* v : vars)
            if (const char* e = std::getenv(v)) return std::atoi(e);
        return -1;
    };
    const int size = num({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"});
    if (size <= 0) return {0, 0};
    return {size, std::max(0, num({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}))};
}

void report_error(const std::string& message, ErrorCode code) {
    if (g_error_reported) return;
    const auto [world, rank] = mpi_world_from_env();
    if (world > 1 && !g_ranks_met && !g_for_the_job) {
        if (code == ErrorCode::kInvalidArgument && rank != 0) {
            // Rank 0 says it for all. mpirun ends the job as soon as one rank exits non-zero: give
            // rank 0 (perhaps started later) time to print first.
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            return;
        }
        if (code != ErrorCode::kInvalidArgument) set_log_prefix("[rank " + std::to_string(rank) + "] ");
    }
    log_line(LogLevel::kError, message);
}
}  // namespace net

namespace {

// should_stop for a stage that is not the coordinator: true once this process has been signalled
// and the coordinator has not shut the pipeline down within `grace` (when the same Ctrl-C reached
// the coordinator too, it drives an orderly shutdown first).
std::function<bool()> stop_after_signal(std::chrono::milliseconds grace) {
    auto since = std::make_shared<std::chrono::steady_clock::time_point>();
    return [since, grace] {
        if (!interrupted()) return false;
        const auto now = std::chrono::steady_clock::now();
        if (*since == std::chrono::steady_clock::time_point{}) *since = now;
        return now - *since > grace;
    };
}

// Bounds a worker puts on a job before it allocates anything for it (the coordinator is
// authenticated, but a peer is never trusted with sizes).
constexpr int kMaxJobThreads = 1024;
constexpr int kMaxJobCtx = 1 << 20;
constexpr int kMaxJobSeq = 4096;
constexpr int64_t kMaxJobKvRows = int64_t(1) << 24;  // n_ctx x n_seq
constexpr size_t kBootstrapControlBytes = size_t(64) << 10;  // Assign / Hello / Ready / Start, abort reasons

// The most a ubatch or result of `tokens` tokens can take on a link: hidden states or logits of
// `width` floats per token, and headers of a few vectors of int32 per token.
transport::LinkLimits job_limits(int64_t tokens, int64_t width, int n_stages) {
    const transport::LinkLimits defaults;
    transport::LinkLimits l;
    l.max_payload_bytes = static_cast<size_t>(std::min<uint64_t>(
        defaults.max_payload_bytes, static_cast<uint64_t>(tokens) * static_cast<uint64_t>(width) * sizeof(float)));
    l.max_control_bytes = std::min<size_t>(defaults.max_control_bytes,
                                           kBootstrapControlBytes + 16 * static_cast<size_t>(tokens) + 8 * n_stages);
    return l;
}

// Every rank has made its stage or failed (`mine`): the ranks compare notes before any link
// exists, so that none waits on a peer that is gone. An error every rank hit alike (a missing -m
// file, a --split that does not fit the ranks) is printed once, by rank 0, without a rank prefix;
// otherwise each failed rank prints its own, prefixed, and the others nothing. Printed here,
// before MPI_Finalize, so that mpirun cannot end rank 0 before its line is out; every rank then
// throws (main prints nothing more) and exits with the first failed rank's code.
void agree_after_setup(const transport::MpiEnv& env, const std::optional<Error>& mine) {
    const std::string note = mine ? std::to_string(static_cast<int>(mine->code())) + ":" + mine->what() : "";
    const std::vector<std::string> notes = env.allgather(note);
    const auto failed = std::find_if(notes.begin(), notes.end(), [](const std::string& n) { return !n.empty(); });
    if (failed == notes.end()) return;
    const size_t colon = failed->find(':');
    const auto code = static_cast<ErrorCode>(std::atoi(failed->substr(0, colon).c_str()));
    const std::string message = failed->substr(colon + 1);
    if (std::all_of(notes.begin(), notes.end(), [&](const std::string& n) { return n == notes[0]; })) {
        if (env.rank() == 0) {
            set_log_prefix("");
            log_line(LogLevel::kError, message);
        }
    } else if (mine) {
        log_line(LogLevel::kError, mine->what());
    }
    net::g_error_reported = true;
    throw Error(code, mine ? std::string(mine->what()) : "rank " + std::to_string(failed - notes.begin()) +
                                                              " failed while setting up: " + message);
}

}  // namespace

void Session::start_mpi(const SessionOptions& opt) {
    auto env = std::make_shared<transport::MpiEnv>();
    mpi_env_ = env;
    rank_ = env->rank();
    const int S = env->size();
    set_log_prefix("[rank " + std::to_string(rank_) + "] ");
    net::g_ranks_met = true;
    // This rank's stage; what fails is compared with the other ranks' below.
    std::optional<Error> failed;
    try {
        if (opt.n_stages > 1 && opt.n_stages != S) {
            const std::string flag = opt.n_stages_from.empty() ? std::string("--stages") : opt.n_stages_from;
            PIPELM_THROW(ErrorCode::kInvalidArgument, flag, " gives ", opt.n_stages, " stages but mpirun started ", S,
                         " ranks: under mpirun every rank is one stage (match -np ", opt.n_stages,
                         flag == "--split" ? " or give one count per rank)" : " or drop " + flag + ")");
        }
        if (opt.model_path.empty()) PIPELM_THROW(ErrorCode::kInvalidArgument, "no model given: pass -m FILE.gguf");
        file_ = hf::open_model(opt.model_path);
        cfg_ = model::Glm4Config::from_gguf(*file_);
        log_model(*file_, cfg_);
        n_ctx_ = resolve_ctx(opt, cfg_);
        plan_ = pipeline::make_plan(pipeline::ModelCosts::from_gguf(*file_, cfg_.n_layer), plan_request(opt, cfg_, S, n_ctx_));
        if (rank_ == 0 && !opt.quiet_plan) PIPELM_INFO("plan: ", S, " stages, one per MPI rank\n", pipeline::format_plan(plan_));
        const int threads = opt.threads > 0 ? opt.threads : default_threads(net::local_ranks());
        pools_.push_back(std::make_unique<ThreadPool>(threads));
        const auto& p = plan_[rank_];
        model::StageSpec spec{rank_, p.first_layer, p.last_layer, p.has_embedding, p.has_head};
        stages_.push_back(model::make_stage(
            file_, cfg_, spec,
            stage_options(n_ctx_, opt.n_seq, opt.cache_k, opt.cache_v, opt.check_finite, p.device, opt.attn_precision,
                          model::find_arch(cfg_.arch, file_->path()).precision, opt.act_quant),
            *pools_[0]));
        log_stage(*stages_[0]);
    } catch (const Error& e) {
        failed = e;
    } catch (const std::bad_alloc&) {
        failed = Error(ErrorCode::kOutOfMemory, "out of memory: use more stages, a smaller --ctx or a smaller model");
    }
    agree_after_setup(*env, failed);
    transport::StageLinks links = transport::make_mpi_links(*env);
    const std::string id = pipeline::model_identity(*file_);
    if (rank_ != 0) {
        pipeline::RunnerOptions ro;
        ro.model_id = id;
        ro.n_stages = S;
        ro.n_seq = opt.n_seq;
        // A signal may reach every rank; rank 0 drives the clean shutdown. Give up on our own
        // only if it has not done so 5 s after the signal. (OpenMPI's mpirun does not forward
        // Ctrl-C: it sends SIGTERM to each rank 1 s later and SIGKILL 1 s after that.)
        ro.should_stop = stop_after_signal(std::chrono::seconds(5));
        pipeline::StageRunner runner(*stages_[0], links, ro);
        runner.run();
        return;
    }
    tokenizer_ = std::make_unique<tok::Tokenizer>(vocab_from_gguf(*file_));
    const pipeline::EngineOptions eo = engine_options(opt, S, id);
    engine_ = std::make_unique<pipeline::Engine>(*stages_[0], links, eo);
    engine_->handshake();
}

namespace {

// The TCP pipeline of a coordinator, and what re-forming it after a loss needs (--standby).
struct TcpPipeline {
    std::vector<std::string> workers;   // address of stage i+1 now
    std::vector<std::string> standbys;  // not used yet, in the order given
    std::string token;
    std::chrono::milliseconds timeout{30000};
    transport::TcpOptions options;
    std::vector<std::string> jobs;  // encoded WorkerJob of stage s (jobs[0] unused)
    std::shared_ptr<transport::CoordinatorSession> session;
    // For giving a lost stage to the survivors when no standby is left (only with --mem: the
    // budgets say whether they have room).
    WorkerJob job;  // the fields every stage's job shares
    pipeline::ModelCosts costs;
    pipeline::PlanRequest request;
    std::vector<pipeline::StagePlan> plan;  // now
};

// The encoded WorkerJob of stage s of `plan`.
std::string encode_job(WorkerJob j, const std::vector<pipeline::StagePlan>& plan, int s) {
    j.first_layer = plan[s].first_layer;
    j.last_layer = plan[s].last_layer;
    j.n_stages = static_cast<int>(plan.size());
    j.device = plan[s].device;
    return pipeline::encode(j);
}

std::string layer_range(const pipeline::StagePlan& p) {
    return ::pipelm::detail::concat(p.first_layer, "-", p.last_layer - 1);
}

std::vector<std::string> split_list(const std::string& list) {
    std::vector<std::string> out;
    std::stringstream ss(list);
    std::string w;
    while (std::getline(ss, w, ','))
        if (!w.empty()) out.push_back(w);
    return out;
}

// Connects to stage s+1's worker at `address`; null (with a warning) when it is gone or does
// not answer within the pipeline's timeout.
std::shared_ptr<transport::Link> reach(const TcpPipeline& p, int s, const std::string& address) {
    if (transport::tcp_nobody_listens(address, std::chrono::milliseconds(1000))) {
        PIPELM_WARN("stage ", s + 1, ": nothing listens at ", address, " any more");
        return nullptr;
    }
    transport::TcpOptions o = p.options;
    o.peer_label = "stage " + std::to_string(s + 1);
    try {
        return transport::tcp_connect(address, p.token, p.timeout, o);
    } catch (const Error& e) {
        PIPELM_WARN("stage ", s + 1, ": the worker at ", address, " does not answer: ", e.what());
        return nullptr;
    }
}

// Relink for the Engine: aborts the broken pipeline (its live workers go back to listening),
// finds which workers are gone, gives each lost stage to the next standby that answers and wires
// a new pipeline (same plan, same jobs). Rethrows `cause` when every worker still answers (the
// pipeline broke for another reason: a worker's own error, Ctrl-C).
pipeline::Relinked relink_tcp(TcpPipeline& p, const Error& cause) {
    const std::string why = std::string("coordinator: re-forming the pipeline after: ") + cause.what();
    for (const auto& l : p.session->workers)
        if (l) l->abort(why);
    p.session.reset();
    const int n = static_cast<int>(p.workers.size());
    std::vector<std::shared_ptr<transport::Link>> connected(n);
    std::vector<int> lost;
    for (int s = 0; s < n; ++s)
        if (!(connected[s] = reach(p, s, p.workers[s]))) lost.push_back(s);
    auto give_up = [&](const std::string& msg) {
        for (const auto& l : connected)
            if (l) l->abort(msg);
        throw Error(lost.empty() ? cause.code() : ErrorCode::kPeerLost, msg);
    };
    if (lost.empty()) give_up(cause.what());
    std::string replaced;
    std::vector<int> orphans;  // plan stages lost with no standby left
    for (int s : lost) {
        while (!connected[s]) {
            if (p.standbys.empty()) {
                orphans.push_back(s + 1);
                break;
            }
            const std::string standby = p.standbys.front();
            p.standbys.erase(p.standbys.begin());
            if ((connected[s] = reach(p, s, standby))) {
                replaced += ::pipelm::detail::concat(replaced.empty() ? "" : ", ", "stage ", s + 1, ": ", p.workers[s], " -> ", standby);
                p.workers[s] = standby;
            }
        }
    }
    pipeline::Relinked out;
    if (!orphans.empty()) {
        const int s = orphans.front() - 1;
        const std::string lost_what = ::pipelm::detail::concat("stage ", s + 1, " (worker ", p.workers[s], ", layers ",
                                                               layer_range(p.plan[s + 1]), ") is lost and no standby is left");
        if (p.request.mem_budget.empty())
            give_up(::pipelm::detail::concat(lost_what, " (--standby H:P,...; with --mem the surviving workers take its "
                                             "layers when they have room): ", cause.what()));
        // The survivors share the lost layers (every stage starts over with an empty KV cache
        // anyway: the replay rebuilds them all).
        std::vector<int> survivor;
        std::vector<pipeline::StagePlan> plan;
        pipeline::PlanRequest next;
        try {
            plan = pipeline::replan_over_survivors(p.costs, p.request, p.plan, orphans, &survivor, &next);
        } catch (const Error& e) {
            give_up(::pipelm::detail::concat(lost_what, "; ", e.what(), ": ", cause.what()));
        }
        std::vector<std::shared_ptr<transport::Link>> kept;
        std::vector<std::string> workers;
        std::vector<std::string> jobs(plan.size());
        for (size_t j = 1; j < survivor.size(); ++j) {
            kept.push_back(connected[survivor[j] - 1]);
            workers.push_back(p.workers[survivor[j] - 1]);
            jobs[j] = encode_job(p.job, plan, static_cast<int>(j));
        }
        std::string layout;
        for (size_t j = 0; j < plan.size(); ++j) layout += (j ? " | " : "") + layer_range(plan[j]);
        for (int o : orphans)
            replaced += ::pipelm::detail::concat(replaced.empty() ? "" : ", ", "stage ", o, ": ", p.workers[o - 1],
                                                 " -> the survivors");
        replaced += " (layers now " + layout + ")";
        p.request = next;  // the survivors' budgets by their new index, for a later loss
        p.plan = plan;
        p.workers = workers;
        p.jobs = jobs;
        connected = kept;
        for (const auto& q : plan) out.plan.push_back({q.first_layer, q.last_layer});
    }
    PIPELM_INFO("re-forming the pipeline: ", replaced);
    p.session = std::make_shared<transport::CoordinatorSession>(transport::tcp_coordinator_wire(
        connected, p.workers, p.timeout, [&p](int s) { return p.jobs[s]; }));
    out.links = p.session->links;
    out.replaced = replaced;
    return out;
}

}  // namespace

void Session::start_tcp(const SessionOptions& opt) {
    auto tcp = std::make_shared<TcpPipeline>();
    tcp->workers = split_list(opt.workers);
    tcp->standbys = split_list(opt.standby);
    for (const auto& a : tcp->standbys) transport::parse_host_port(a);  // a malformed address fails now
    const int S = 1 + static_cast<int>(tcp->workers.size());
    if (opt.token_file.empty())
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--workers needs --token-file FILE (the secret the workers were started with)");
    tcp->token = transport::read_token_file(opt.token_file);
    tcp->costs = pipeline::ModelCosts::from_gguf(*file_, cfg_.n_layer);
    tcp->request = plan_request(opt, cfg_, S, n_ctx_);
    plan_ = pipeline::make_plan(tcp->costs, tcp->request);
    tcp->plan = plan_;
    if (!opt.quiet_plan) PIPELM_INFO("plan: ", S, " stages, TCP workers ", opt.workers, "\n", pipeline::format_plan(plan_));
    const std::string id = pipeline::model_identity(*file_);
    WorkerJob& j = tcp->job;
    j.model_path = opt.model_path;
    j.model_id = id;
    j.n_ctx = n_ctx_;
    j.n_seq = opt.n_seq;
    j.threads = opt.threads;
    j.cache_k = static_cast<uint32_t>(opt.cache_k);
    j.cache_v = static_cast<uint32_t>(opt.cache_v);
    j.check_finite = opt.check_finite;
    j.attn_precision = opt.attn_precision;
    j.act_quant = opt.act_quant;
    tcp->jobs.resize(S);
    for (int s = 1; s < S; ++s) tcp->jobs[s] = encode_job(j, plan_, s);
    tcp->timeout = std::chrono::milliseconds(static_cast<int64_t>(opt.connect_timeout_s * 1000));
    tcp->options.peer_timeout = std::chrono::milliseconds(static_cast<int64_t>(opt.peer_timeout_s * 1000));
    // What the last stage may send back: the outputs of one ubatch (at most --ubatch tokens, or
    // one per slot in a multi-sequence step), logits included.
    tcp->options.receive_limits = job_limits(std::max(opt.ubatch, opt.n_seq), cfg_.n_vocab, S);
    tcp->session = std::make_shared<transport::CoordinatorSession>(transport::tcp_coordinator_connect(
        tcp->workers, tcp->token, tcp->timeout, [&](int s) { return tcp->jobs[s]; }, tcp->options));
    keep_alive_.push_back(tcp);
    const int threads = opt.threads > 0 ? opt.threads : default_threads(1);
    pools_.push_back(std::make_unique<ThreadPool>(threads));
    const auto& p = plan_[0];
    model::StageSpec spec{0, p.first_layer, p.last_layer, p.has_embedding, p.has_head};
    stages_.push_back(model::make_stage(
        file_, cfg_, spec,
        stage_options(n_ctx_, opt.n_seq, opt.cache_k, opt.cache_v, opt.check_finite, p.device, opt.attn_precision,
                      model::find_arch(cfg_.arch, file_->path()).precision, opt.act_quant),
        *pools_[0]));
    pipeline::EngineOptions eo = engine_options(opt, S, id);
    // A lost stage goes to a standby, else (with --mem, which says who has room) to the survivors.
    if (!tcp->standbys.empty() || !tcp->request.mem_budget.empty()) eo.relink = [tcp](const Error& cause) { return relink_tcp(*tcp, cause); };
    engine_ = std::make_unique<pipeline::Engine>(*stages_[0], tcp->session->links, eo);
    engine_->handshake();
}

namespace {

std::string file_name(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The served model a job asks for: the same path, else the only served file of the same name
// (the file may live elsewhere on this host). Nothing else is ever opened, and the refusal names
// only what the coordinator sent and the names of the files this worker serves.
std::string select_model(const std::string& asked, const std::vector<std::string>& served) {
    for (const auto& m : served)
        if (m == asked) return m;
    std::vector<std::string> same_name;
    for (const auto& m : served)
        if (file_name(m) == file_name(asked)) same_name.push_back(m);
    if (same_name.size() == 1) return same_name[0];
    std::string names;
    for (const auto& m : served) names += (names.empty() ? "" : ", ") + file_name(m);
    PIPELM_THROW(ErrorCode::kInvalidArgument, "this worker does not serve model '", asked, "' (it serves ", names,
                 "): start it with -m naming that file");
}

// A job whose Assign arrived: checked, its model opened, ready to serve.
struct PreparedJob {
    WorkerJob job;
    std::string path;
    std::shared_ptr<gguf::GgufFile> file;
    model::Glm4Config cfg;
};

PreparedJob prepare_job(const transport::TcpJob& tj, const std::vector<std::string>& models) {
    PreparedJob p;
    p.job = pipeline::decode<WorkerJob>(tj.job, "worker job");
    const WorkerJob& j = p.job;
    if (j.n_stages != tj.n_stages || j.threads < 0 || j.threads > kMaxJobThreads || j.n_ctx < 1 ||
        j.n_ctx > kMaxJobCtx || j.n_seq < 1 || j.n_seq > kMaxJobSeq ||
        int64_t(j.n_ctx) * j.n_seq > kMaxJobKvRows || j.check_finite > 1)
        PIPELM_THROW(ErrorCode::kProtocol, "worker job for stage ", tj.stage, " out of bounds: ", j.n_stages,
                     " stages (the bootstrap says ", tj.n_stages, "), ", j.threads, " threads (at most ", kMaxJobThreads,
                     "), context ", j.n_ctx, " x ", j.n_seq, " slots (at most ", kMaxJobCtx, " x ", kMaxJobSeq,
                     ", ", kMaxJobKvRows, " rows in all)");
    p.path = select_model(j.model_path, models);
    p.file = hf::open_model(p.path);
    p.cfg = model::Glm4Config::from_gguf(*p.file);
    return p;
}

void serve_job(transport::WorkerSession& ws, const PreparedJob& p, int threads_flag) {
    const WorkerJob& job = p.job;
    set_log_prefix("[stage " + std::to_string(ws.job.stage) + "] ");
    PIPELM_INFO("job: stage ", ws.job.stage, " of ", ws.job.n_stages, ", layers ", job.first_layer, "-",
                job.last_layer - 1, " of ", p.path);
    const int threads = threads_flag > 0 ? threads_flag : (job.threads > 0 ? job.threads : default_threads(1));
    ThreadPool pool(threads);
    const bool last = ws.job.stage + 1 == ws.job.n_stages;
    model::StageSpec spec{ws.job.stage, job.first_layer, job.last_layer, false, last};
    auto stage_ptr = model::make_stage(p.file, p.cfg, spec,
                           stage_options(job.n_ctx, job.n_seq, static_cast<GgmlType>(job.cache_k),
                                         static_cast<GgmlType>(job.cache_v), job.check_finite != 0, job.device,
                                         job.attn_precision, model::find_arch(p.cfg.arch, p.path).precision, job.act_quant),
                           pool);
    pipeline::RunnerOptions ro;
    ro.model_id = pipeline::model_identity(*p.file);
    ro.n_stages = ws.job.n_stages;
    ro.n_seq = job.n_seq;
    ro.n_ctx = job.n_ctx;
    ro.should_stop = stop_after_signal(std::chrono::seconds(2));
    // Fault-injection tests (tests/runtime/recovery_test.cc): SIGKILL this worker when the N-th
    // ubatch of its job arrives.
    if (const char* n = std::getenv("PIPELM_FAULT_KILL_AT_UBATCH"); n && std::atoll(n) > 0) {
        auto seen = std::make_shared<long long>(0);
        const long long at = std::atoll(n);
        ro.on_ubatch = [seen, at] {
            if (++*seen == at) ::raise(SIGKILL);
        };
    }
    pipeline::StageRunner runner(*stage_ptr, ws.links, ro);
    runner.run();
    PIPELM_INFO("job done");
}

}  // namespace

namespace net {

int run_worker(const WorkerOptions& opt) {
    if (opt.listen.empty()) PIPELM_THROW(ErrorCode::kInvalidArgument, "worker: pass --listen HOST:PORT");
    if (opt.token_file.empty()) PIPELM_THROW(ErrorCode::kInvalidArgument, "worker: pass --token-file FILE");
    if (opt.models.empty())
        PIPELM_THROW(ErrorCode::kInvalidArgument,
                     "worker: pass -m FILE.gguf[,FILE2.gguf]: the models this worker serves (it opens no other file)");
    for (const auto& m : opt.models) hf::open_model(m);  // unreadable or malformed: say so now
    const std::string token = transport::read_token_file(opt.token_file);
    transport::TcpOptions bootstrap;
    bootstrap.peer_timeout = std::chrono::milliseconds(static_cast<int64_t>(opt.peer_timeout_s * 1000));
    bootstrap.receive_limits = transport::LinkLimits{};
    bootstrap.receive_limits->max_control_bytes = kBootstrapControlBytes;
    bootstrap.receive_limits->max_payload_bytes = 0;  // until the job says how large a ubatch may be
    auto listener = transport::TcpListener::bind(opt.listen, token, bootstrap);
    PIPELM_INFO("worker listening on ", listener->address());
    for (;;) {
        transport::WorkerSession ws;
        std::optional<PreparedJob> prepared;
        auto limits_for_job = [&](const transport::TcpJob& tj) {
            prepared = prepare_job(tj, opt.models);
            const WorkerJob& j = prepared->job;
            const int64_t tokens = std::min<int64_t>(int64_t(j.n_ctx) * j.n_seq, 1 << 20);
            return job_limits(tokens, prepared->cfg.n_embd, j.n_stages);
        };
        try {
            if (interrupted()) {
                PIPELM_INFO("worker: interrupted, exiting");
                return 130;
            }
            ws = transport::tcp_worker_accept(*listener, std::chrono::seconds(2), limits_for_job);
        } catch (const Error& e) {
            if (e.code() == ErrorCode::kTimeout) continue;
            if (opt.once) throw;
            PIPELM_WARN("could not start a job: ", e.what());
            continue;
        }
        try {
            serve_job(ws, *prepared, opt.threads);
        } catch (const Error& e) {
            if (ws.control) ws.control->abort(e.what());
            if (opt.once) throw;
            log_line(LogLevel::kError, e.what());
            set_log_prefix("");
            continue;
        }
        set_log_prefix("");
        if (opt.once) return 0;
    }
}

std::vector<std::string> split_models(const std::string& list) {
    std::vector<std::string> out;
    std::stringstream ss(list);
    std::string m;
    while (std::getline(ss, m, ','))
        if (!m.empty()) out.push_back(m);
    return out;
}

}  // namespace net

int run_worker(const std::string& listen, const std::string& token_file, const std::string& model_override, int threads,
               bool once) {
    net::WorkerOptions o;
    o.listen = listen;
    o.token_file = token_file;
    o.models = net::split_models(model_override);
    o.threads = threads;
    o.once = once;
    return net::run_worker(o);
}

}  // namespace pipelm::launcher
