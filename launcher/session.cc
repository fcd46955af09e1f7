#include "launcher/session.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "runtime/base/log.h"
#include "runtime/hf/hf_folder.h"
#include "transport/inproc_link.h"
#include "launcher/session_net.h"

namespace pipelm::launcher {

const char* mode_name(Mode m) {
    switch (m) {
        case Mode::kInProcess: return "in-process";
        case Mode::kMpi: return "mpi";
        case Mode::kTcp: return "tcp";
    }
    return "?";
}

void log_model(const gguf::GgufFile& f, const model::Glm4Config& cfg) {
    PIPELM_DEBUG("model: ", f.path(), ": ", cfg.summary(), ", ", f.tensors().size(), " tensors mapped");
}

void log_stage(const model::Stage& st) {
    const model::StageSpec& sp = st.spec();
    const std::string layers = sp.first_layer == sp.last_layer
                                   ? std::string("no layers")
                                   : "layers " + std::to_string(sp.first_layer) + ".." + std::to_string(sp.last_layer - 1);
    PIPELM_DEBUG("stage ", sp.index, ": ", layers, sp.has_embedding ? " + embedding" : "",
                 sp.has_head ? " + head" : "", " on ", st.device(), ": weights ", pipeline::mib(st.weight_bytes()), " MiB, KV cache ",
                 pipeline::mib(st.kv_bytes()), " MiB");
}

int default_threads(int local_stages) {
    const long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
    return std::max(1, static_cast<int>(cores) / std::max(1, local_stages));
}

SessionOptions SessionOptions::from_args(const cli::Args& a) {
    SessionOptions o;
    o.model_path = a.str("--model");
    o.threads = a.has("--threads") ? static_cast<int>(a.integer("--threads")) : 0;
    o.n_ctx = a.has("--ctx") ? static_cast<int>(a.integer("--ctx")) : 0;
    o.ubatch = a.has("--ubatch") ? static_cast<int>(a.integer("--ubatch")) : 64;
    o.n_stages = a.has("--stages") ? static_cast<int>(a.integer("--stages")) : 1;
    o.split = a.has("--split") ? a.str("--split") : "auto";
    o.mem = a.str("--mem");
    o.devices = a.has("--devices") ? a.str("--devices") : "";
    o.workers = a.str("--workers");
    o.standby = a.str("--standby");
    if (!o.standby.empty() && o.workers.empty())
        PIPELM_THROW(ErrorCode::kInvalidArgument,
                     "--standby works only with --workers (TCP mode): in-process and MPI pipelines end the job when a "
                     "stage is lost");
    o.token_file = a.str("--token-file");
    o.connect_timeout_s = a.number("--connect-timeout");
    o.peer_timeout_s = a.number("--peer-timeout");
    o.wire = pipeline::parse_wire(a.str("--wire"));
    o.n_seq = static_cast<int>(a.integer("--parallel"));
    o.cache_k = parse_ggml_type(a.str("--cache-type-k"));
    o.cache_v = parse_ggml_type(a.str("--cache-type-v"));
    o.check_finite = !a.flag("--no-check-finite");
    if (o.threads < 0) PIPELM_THROW(ErrorCode::kInvalidArgument, "--threads must be positive");
    if (o.ubatch <= 0) PIPELM_THROW(ErrorCode::kInvalidArgument, "--ubatch must be positive");
    if (o.n_seq <= 0) PIPELM_THROW(ErrorCode::kInvalidArgument, "--parallel must be positive");
    if (o.n_ctx < 0) PIPELM_THROW(ErrorCode::kInvalidArgument, "--ctx must be positive");
    if (o.n_stages < 1) PIPELM_THROW(ErrorCode::kInvalidArgument, "--stages must be at least 1");
    if (a.has("--attn-precision")) {
        const std::string p = a.str("--attn-precision");
        if (p != "f32" && p != "f16" && p != "bf16")
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--attn-precision ", p, ": use f32 (default for glm4) or f16");
        o.attn_precision = p;
    }
    if (a.has("--act-quant")) {
        const std::string q = a.str("--act-quant");
        if (q != "auto" && q != "none" && q != "q8")
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--act-quant ", q,
                         ": use auto (the default: q8 for quantized weights, exact for F32/F16/BF16), none (f32 "
                         "activations, exact) or q8 (int8 activations per 32-value block)");
        o.act_quant = q;
    }
    if (a.has("--stages")) o.n_stages_from = "--stages";
    if (!o.devices.empty()) {
        std::stringstream ss(o.devices);
        std::string d;
        int n = 0;
        while (std::getline(ss, d, ',')) {
            ++n;
            if (d != "cpu" && d.rfind("cuda:", 0) != 0)
                PIPELM_THROW(ErrorCode::kInvalidArgument, "--devices ", o.devices, ": '", d, "' is not a device (use cpu or cuda:N)");
        }
        // One device per stage: --devices implies the number of in-process stages.
        if (!a.has("--stages")) o.n_stages = n;
        else if (o.n_stages != n)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--devices names ", n, " devices but --stages is ", o.n_stages);
        if (o.n_stages_from.empty()) o.n_stages_from = "--devices";
    }
    if (o.split != "auto" && o.split != "mem") {
        // Layers per stage: the list's length is the stage count, as --devices' is.
        const int n = static_cast<int>(pipeline::parse_split(o.split).size());
        if (!o.n_stages_from.empty() && o.n_stages != n)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--split ", o.split, " names ", n, " stages but ", o.n_stages_from,
                         " ", o.n_stages_from == "--stages" ? a.str("--stages") : o.devices, " gives ", o.n_stages,
                         ": give one count per stage, or drop ", o.n_stages_from);
        o.n_stages = n;
        if (o.n_stages_from.empty()) o.n_stages_from = "--split";
    }
    return o;
}

pipeline::PlanRequest plan_request(const SessionOptions& o, const model::Glm4Config& cfg, int n_stages, int n_ctx) {
    pipeline::PlanRequest r;
    r.n_stages = n_stages;
    r.split = o.split;
    if (!o.mem.empty()) r.mem_budget = pipeline::parse_mem_list(o.mem);
    std::stringstream ss(o.devices);
    std::string d;
    while (std::getline(ss, d, ',')) r.devices.push_back(d);
    r.n_ctx = n_ctx;
    r.n_seq = o.n_seq;
    r.kv_bytes_per_token_layer = ggml_row_bytes(o.cache_k, cfg.kv_dim()) + ggml_row_bytes(o.cache_v, cfg.kv_dim());
    return r;
}

int resolve_ctx(const SessionOptions& o, const model::Glm4Config& cfg) {
    return o.n_ctx > 0 ? o.n_ctx : std::min(4096, cfg.n_ctx_train > 0 ? cfg.n_ctx_train : 4096);
}

model::StageOptions stage_options(int n_ctx, int n_seq, GgmlType k, GgmlType v, bool check, const std::string& device,
                                  const std::string& attn_precision, const model::PrecisionPolicy& arch_policy,
                                  const std::string& act_quant) {
    model::StageOptions so;
    so.device = device;
    so.precision = arch_policy;
    if (!attn_precision.empty()) {
        so.precision.kq = model::parse_precision(attn_precision);
        so.precision.softmax_v = so.precision.kq;
    }
    so.n_ctx = n_ctx;
    so.n_seq = n_seq;
    so.cache_type_k = k;
    so.cache_type_v = v;
    so.check_finite = check;
    so.act_quant = act_quant;
    return so;
}

pipeline::EngineOptions Session::engine_options(const SessionOptions& opt, int n_stages, const std::string& id) const {
    pipeline::EngineOptions eo;
    eo.n_stages = n_stages;
    eo.ubatch = opt.ubatch;
    eo.wire = opt.wire;
    eo.n_seq = opt.n_seq;
    eo.model_id = id;
    eo.model_name = file_->path();
    for (const auto& p : plan_) eo.plan.push_back({p.first_layer, p.last_layer});
    return eo;
}

std::unique_ptr<Session> Session::open(const SessionOptions& opt) {
    std::unique_ptr<Session> s(new Session());
    if (net::launched_by_mpirun()) s->mode_ = Mode::kMpi;
    else if (!opt.workers.empty()) s->mode_ = Mode::kTcp;
    if (s->mode_ == Mode::kMpi) {
        s->start_mpi(opt);
        return s;
    }
    if (opt.model_path.empty())
        PIPELM_THROW(ErrorCode::kInvalidArgument, "no model given: pass -m FILE.gguf");
    s->file_ = hf::open_model(opt.model_path);
    s->cfg_ = model::Glm4Config::from_gguf(*s->file_);
    log_model(*s->file_, s->cfg_);
    s->tokenizer_ = std::make_unique<tok::Tokenizer>(vocab_from_gguf(*s->file_));
    s->n_ctx_ = resolve_ctx(opt, s->cfg_);
    if (s->mode_ == Mode::kTcp) s->start_tcp(opt);
    else s->start_in_process(opt);
    return s;
}

void Session::start_in_process(const SessionOptions& opt) {
    const int S = opt.n_stages;
    plan_ = pipeline::make_plan(pipeline::ModelCosts::from_gguf(*file_, cfg_), plan_request(opt, cfg_, S, n_ctx_));
    if (!opt.quiet_plan && S > 1)
        PIPELM_INFO("plan: ", S, " stages, in-process links\n", pipeline::format_plan(plan_));
    else
        PIPELM_DEBUG("plan: ", S, " stage(s), in-process\n", pipeline::format_plan(plan_));
    const int threads = opt.threads > 0 ? opt.threads : default_threads(S);
    std::vector<transport::StageLinks> links =
        S > 1 ? transport::make_inproc_pipeline(S) : std::vector<transport::StageLinks>(1);
    const std::string id = pipeline::model_identity(*file_);
    // Progress bar on stderr when loading takes more than a second and stderr is a terminal.
    const bool tty = ::isatty(2) != 0;
    const auto t_load = std::chrono::steady_clock::now();
    bool bar_shown = false;
    int layers_done = 0;
    auto progress = [&](int, int) {
        ++layers_done;
        if (!tty || std::chrono::steady_clock::now() - t_load < std::chrono::seconds(1)) return;
        const int width = 40, filled = width * layers_done / std::max(1, cfg_.n_layer);
        std::fprintf(stderr, "\rloading [%s%s] %d/%d layers", std::string(filled, '#').c_str(),
                     std::string(width - filled, ' ').c_str(), layers_done, cfg_.n_layer);
        std::fflush(stderr);
        bar_shown = true;
    };
    for (int s = 0; s < S; ++s) {
        pools_.push_back(std::make_unique<ThreadPool>(threads));
        model::StageSpec spec{s, plan_[s].first_layer, plan_[s].last_layer, plan_[s].has_embedding, plan_[s].has_head};
        model::StageOptions so = stage_options(n_ctx_, opt.n_seq, opt.cache_k, opt.cache_v, opt.check_finite,
                                               plan_[s].device, opt.attn_precision,
                                               model::find_arch(cfg_.arch, file_->path()).precision, opt.act_quant);
        so.on_layer_loaded = progress;
        stages_.push_back(model::make_stage(file_, cfg_, spec, so, *pools_.back()));
    }
    if (bar_shown) std::fputs("\n", stderr);
    for (const auto& st : stages_) log_stage(*st);
    thread_errors_.resize(S);
    for (int s = 1; s < S; ++s) {
        pipeline::RunnerOptions ro;
        ro.model_id = id;
        ro.n_stages = S;
        ro.n_seq = opt.n_seq;
        auto runner = std::make_shared<pipeline::StageRunner>(*stages_[s], links[s], ro);
        threads_.emplace_back([this, runner, s] {
            try {
                runner->run();
            } catch (...) {
                thread_errors_[s] = std::current_exception();
            }
        });
    }
    const pipeline::EngineOptions eo = engine_options(opt, S, id);
    engine_ = std::make_unique<pipeline::Engine>(*stages_[0], links[0], eo);
    engine_->handshake();
}

void Session::close() {
    if (closed_) return;
    closed_ = true;
    std::exception_ptr first;
    if (engine_) {
        try {
            engine_->shutdown();
        } catch (...) {
            first = std::current_exception();
        }
    }
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    for (auto& e : thread_errors_)
        if (e && !first) first = e;
    if (first) std::rethrow_exception(first);
}

Session::~Session() {
    try {
        close();
    } catch (const std::exception& e) {
        PIPELM_WARN("while shutting down: ", e.what());
    }
}

}  // namespace pipelm::launcher
