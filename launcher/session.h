// Wires a command to a pipeline: opens the model, makes the plan, builds this process's stages
// and links for the mode in use (in-process threads, mpirun ranks, TCP workers) and gives the
// coordinator an Engine. The same flags work in every mode.
#pragma once
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "launcher/cli.h"
#include "runtime/base/thread_pool.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/stage.h"
#include "runtime/pipeline/planner.h"
#include "runtime/pipeline/stage_runner.h"
#include "runtime/tokenizer/gguf_vocab.h"
#include "runtime/tokenizer/tokenizer.h"

namespace pipelm::launcher {

enum class Mode { kInProcess, kMpi, kTcp };
const char* mode_name(Mode m);

struct SessionOptions {
    std::string model_path;
    int threads = 0;  // 0 = cores / local stages
    int n_ctx = 0;    // 0 = min(model's, 4096)
    int ubatch = 64;
    int n_stages = 1;
    // The flag that fixed n_stages: "--stages", "--devices" (one device per stage) or "--split"
    // (an explicit list: one count per stage); "" when none did (a command may pick its default).
    std::string n_stages_from;
    std::string split = "auto";
    std::string mem;
    std::string devices;
    std::string workers;
    std::string standby;  // --standby: TCP workers that take over a lost stage
    std::string token_file;
    double connect_timeout_s = 30;
    double peer_timeout_s = 10;  // --peer-timeout: TCP links give up on a silent peer after this
    pipeline::Wire wire = pipeline::Wire::kF32;
    int n_seq = 1;
    GgmlType cache_k = GgmlType::kF32, cache_v = GgmlType::kF32;
    bool check_finite = true;
    bool quiet_plan = false;
    std::string attn_precision;  // "" = the architecture's policy
    std::string act_quant;       // --act-quant: "" = the default of the stage (see StageOptions)

    static SessionOptions from_args(const cli::Args& a);
};

// Job description sent to TCP workers (cereal).
struct WorkerJob {
    std::string model_path;
    std::string model_id;
    int32_t first_layer = 0, last_layer = 0;
    int32_t n_stages = 1;
    int32_t n_ctx = 0, n_seq = 1, threads = 0;
    uint32_t cache_k = 0, cache_v = 0;
    uint8_t check_finite = 1;
    std::string device = "cpu";
    std::string attn_precision;
    std::string act_quant;
    template <class A>
    void serialize(A& ar) {
        ar(model_path, model_id, first_layer, last_layer, n_stages, n_ctx, n_seq, threads, cache_k, cache_v, check_finite,
           device, attn_precision, act_quant);
    }
};

class Session {
public:
    // Builds the pipeline. On MPI ranks other than 0 this runs the stage until the coordinator
    // shuts it down and then returns a session with is_coordinator() == false.
    static std::unique_ptr<Session> open(const SessionOptions& opt);
    ~Session();

    bool is_coordinator() const { return engine_ != nullptr; }
    pipeline::Engine& engine() { return *engine_; }
    const tok::Tokenizer& tokenizer() const { return *tokenizer_; }
    const model::Glm4Config& config() const { return cfg_; }
    const gguf::GgufFile& file() const { return *file_; }
    Mode mode() const { return mode_; }
    int n_ctx() const { return n_ctx_; }
    int rank() const { return rank_; }
    // Orderly shutdown of every stage; rethrows a stage thread's error.
    void close();

private:
    Session() = default;
    void start_in_process(const SessionOptions& opt);
    void start_mpi(const SessionOptions& opt);
    void start_tcp(const SessionOptions& opt);
    pipeline::EngineOptions engine_options(const SessionOptions& opt, int n_stages, const std::string& id) const;

    // First member: destroyed last, so MPI_Finalize runs after every link is closed.
    std::shared_ptr<void> mpi_env_;
    Mode mode_ = Mode::kInProcess;
    int rank_ = 0;
    int n_ctx_ = 0;
    std::shared_ptr<gguf::GgufFile> file_;
    model::Glm4Config cfg_;
    std::unique_ptr<tok::Tokenizer> tokenizer_;
    std::vector<pipeline::StagePlan> plan_;
    std::vector<std::unique_ptr<ThreadPool>> pools_;
    std::vector<std::unique_ptr<model::Stage>> stages_;
    std::unique_ptr<pipeline::Engine> engine_;
    std::vector<std::thread> threads_;
    std::vector<std::exception_ptr> thread_errors_;
    std::vector<std::shared_ptr<void>> keep_alive_;
    bool closed_ = false;
};

// --ctx, or min(the model's training context, 4096).
int resolve_ctx(const SessionOptions& o, const model::Glm4Config& cfg);
// What the planner needs from the flags.
pipeline::PlanRequest plan_request(const SessionOptions& o, const model::Glm4Config& cfg, int n_stages, int n_ctx);
// A stage's options: the architecture's precision policy, overridden by --attn-precision; --act-quant.
model::StageOptions stage_options(int n_ctx, int n_seq, GgmlType k, GgmlType v, bool check, const std::string& device,
                                  const std::string& attn_precision, const model::PrecisionPolicy& arch_policy,
                                  const std::string& act_quant);

// tokenizer.ggml.* keys -> VocabData.
using tok::vocab_from_gguf;  // runtime/tokenizer/gguf_vocab.h
// Debug lines (-v): the model opened (tensors mapped), a stage's layers, device, weights and KV.
void log_model(const gguf::GgufFile& f, const model::Glm4Config& cfg);
void log_stage(const model::Stage& st);
// Threads per stage when --threads is not given.
int default_threads(int local_stages);

// Runs a TCP worker: serves jobs from coordinators until killed (or one job with once).
int run_worker(const std::string& listen, const std::string& token_file, const std::string& model_override,
               int threads, bool once);

}  // namespace pipelm::launcher
