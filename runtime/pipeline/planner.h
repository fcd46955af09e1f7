// Planner: cuts the model's layers into contiguous stages. Input: per-layer weight bytes, the
// embedding (first stage) and final norm + lm_head (last stage), KV bytes per token, devices and
// their memory budgets. Output: layer ranges minimizing the slowest stage (auto), proportional
// to memory (mem) or given (a,b,c). Works from the GGUF tensor table: no weight is read.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/base/ggml_types.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/tensors.h"

namespace pipelm::pipeline {

struct PlanRequest {
    int n_stages = 1;
    std::string split = "auto";         // auto | mem | a,b,c
    std::vector<std::string> devices;   // per stage ("cpu", "cuda:0"); empty = all cpu
    std::vector<uint64_t> mem_budget;   // per stage bytes, 0 = unchecked; one value = same for all
    int n_ctx = 2048;
    int n_seq = 1;
    uint64_t kv_bytes_per_token_layer = 0;  // K + V bytes of one token in one layer
};

struct StagePlan {
    int index = 0;
    std::string device = "cpu";
    int first_layer = 0, last_layer = 0;
    bool has_embedding = false, has_head = false;
    uint64_t weight_bytes = 0;
    uint64_t kv_bytes = 0;
    double compute_share = 0;  // fraction of the estimated per-token compute
};

struct ModelCosts {
    std::vector<uint64_t> layer_bytes;
    uint64_t embedding_bytes = 0;
    uint64_t head_bytes = 0;      // output_norm + lm_head
    uint64_t head_compute = 0;    // lm_head matmul bytes (compute proxy)
    // From the weight table (runtime/model/tensors.h): what each stage would read.
    static ModelCosts from_gguf(const gguf::GgufFile& f, const model::Glm4Config& cfg);
    static ModelCosts from_gguf(const gguf::GgufFile& f, int n_layer);  // reads the config itself
    // Without a file: the bytes a file of these hyperparameters would hold (the weight table's
    // tensors and shapes); matrix_type gives each 2-D weight's type (layer -1 outside the
    // blocks), norms and biases count as F32. `pipelm plan --preset` uses it.
    using MatrixType = std::function<GgmlType(model::TensorId, int64_t ne0, int layer)>;
    static ModelCosts from_config(const model::Glm4Config& cfg, const MatrixType& matrix_type);
};

// Whether stage `stage` of the plan may hold layers [first, end) (with the embedding on stage 0
// and the head on the last): the auto split's memory constraint. Empty = everything fits.
using StageFits = std::function<bool(int stage, int first, int end)>;

// Prompt chunks the auto split assumes for prefill (a 512-token prompt in --ubatch 64).
inline constexpr int kPlanPrefillChunks = 8;
// The auto split: contiguous layer counts for k stages that maximize min(prefill speed-up,
// decode speed-up) as estimated from per-layer costs and the lm_head cost on the last stage
// (see planner.cc). Exposed for tests.
// With `fits`, only partitions whose every stage fits are considered; returns {} when none does.
std::vector<int> balance_two_phase(const std::vector<double>& layer_cost, double head_cost, int k, int chunks,
                                   const StageFits& fits = {});

// Weights + KV of stage `stage` of `n_stages` holding layers [first, end).
uint64_t stage_bytes(const ModelCosts& costs, uint64_t kv_bytes_per_layer, int stage, int n_stages, int first, int end);
// The least, over all contiguous splits into n_stages, of the largest stage_bytes: the smallest
// single --mem with which some split fits.
uint64_t min_fitting_budget(const ModelCosts& costs, uint64_t kv_bytes_per_layer, int n_stages);

// Throws Error{kInvalidArgument} naming the flag: a split that does not sum to n_layer, a stage
// without layers, more stages than layers; Error{kOutOfMemory} for a stage whose weights + KV
// exceed its budget. With budgets, the auto split is the best-balanced split in which every
// stage fits; when none does, the error names min_fitting_budget.
std::vector<StagePlan> make_plan(const ModelCosts& costs, const PlanRequest& req);

// The plan after the stages `lost` of `plan` (made by make_plan from `req`) are gone and nothing
// replaces them: stage 0 keeps its layers (its KV cache and the caller live there), the surviving
// stages share every other layer, contiguously and in their order, as the auto split balances
// them, each within the --mem budget it had (req.mem_budget, by old index). survivor[j] is the old
// index of new stage j; *next, when given, is the request of the new plan (the survivors' budgets
// and devices by new index: what a later loss replans from). Throws Error{kPeerLost} when stage 0
// is lost or no other stage survives, Error{kOutOfMemory} when no split over the survivors fits
// their budgets.
std::vector<StagePlan> replan_over_survivors(const ModelCosts& costs, const PlanRequest& req,
                                             const std::vector<StagePlan>& plan, const std::vector<int>& lost,
                                             std::vector<int>* survivor, PlanRequest* next = nullptr);

// Bytes as MiB with one decimal ("1616.7"), as the plan table and its messages print them.
std::string mib(uint64_t bytes);

// "16,15,15,15" -> counts; throws naming --split.
std::vector<int> parse_split(const std::string& s);
// "8G,512M" -> bytes
std::vector<uint64_t> parse_mem_list(const std::string& s);

std::string format_plan(const std::vector<StagePlan>& plan);

}  // namespace pipelm::pipeline
