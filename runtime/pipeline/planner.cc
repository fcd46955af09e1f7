#include "runtime/pipeline/planner.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <sstream>

#include "runtime/base/error.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/tensors.h"

namespace pipelm::pipeline {

ModelCosts ModelCosts::from_gguf(const gguf::GgufFile& f, const model::Glm4Config& cfg) {
    ModelCosts c;
    for (int l = 0; l < cfg.n_layer; ++l) c.layer_bytes.push_back(model::layer_weight_bytes(f, cfg, l));
    c.embedding_bytes = model::embedding_bytes(f);
    c.head_bytes = model::head_bytes(f, cfg);
    c.head_compute = c.head_bytes - model::head_norm_bytes(f);
    return c;
}

ModelCosts ModelCosts::from_gguf(const gguf::GgufFile& f, int n_layer) {
    model::Glm4Config cfg = model::Glm4Config::from_gguf(f);
    PIPELM_CHECK(cfg.n_layer == n_layer, f.path(), ": ", n_layer, " layers asked for, the file has ", cfg.n_layer);
    return from_gguf(f, cfg);
}

ModelCosts ModelCosts::from_config(const model::Glm4Config& cfg, const MatrixType& matrix_type) {
    using model::TensorId;
    ModelCosts c;
    c.layer_bytes.assign(cfg.n_layer, 0);
    uint64_t embd = 0, norm = 0, output = 0;
    model::for_each_tensor(cfg, cfg.n_layer, [&](TensorId id, int layer) {
        const std::vector<int64_t> ne = model::tensor_shape(id, cfg);
        uint64_t b = static_cast<uint64_t>(ne[0]) * 4;  // norms and biases: F32
        if (model::tensor_def(id).kind == model::TensorKind::kMatrix)
            b = ggml_row_bytes(matrix_type(id, ne[0], layer), ne[0]) * static_cast<uint64_t>(ne[1]);
        if (layer >= 0) c.layer_bytes[layer] += b;
        else if (id == TensorId::kTokenEmbd) embd = b;
        else if (id == TensorId::kOutputNorm) norm = b;
        else if (id == TensorId::kOutput) output = b;
    });
    c.embedding_bytes = embd;
    c.head_bytes = norm + (cfg.tied_output ? embd : output);
    c.head_compute = c.head_bytes - norm;
    return c;
}

std::vector<int> parse_split(const std::string& s) {
    std::vector<int> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v <= 0 || v > 100000)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--split ", s, ": '", item,
                         "' is not a positive layer count (use auto, mem, or counts like 16,15,15,15)");
        out.push_back(static_cast<int>(v));
    }
    return out;
}

std::vector<uint64_t> parse_mem_list(const std::string& s) {
    std::vector<uint64_t> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        char* end = nullptr;
        const double v = std::strtod(item.c_str(), &end);
        uint64_t mult = 1;
        std::string suf(end ? end : "");
        if (suf == "K" || suf == "k" || suf == "KiB") mult = 1ull << 10;
        else if (suf == "M" || suf == "m" || suf == "MiB") mult = 1ull << 20;
        else if (suf == "G" || suf == "g" || suf == "GiB") mult = 1ull << 30;
        else if (suf == "T" || suf == "TiB") mult = 1ull << 40;
        else if (!suf.empty())
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--mem ", s, ": cannot read '", item, "' (use e.g. 8G,512M)");
        if (!(v >= 0)) PIPELM_THROW(ErrorCode::kInvalidArgument, "--mem ", s, ": negative size");
        out.push_back(static_cast<uint64_t>(v * static_cast<double>(mult)));
    }
    return out;
}

namespace {

// Contiguous partition of n layers into k parts (DP, O(k n^2)): minimizes the largest decode
// cost (layers + `last_extra` on the last part) among partitions whose every part's prefill cost
// (layers only) is at most `max_prefill`. Returns false when no partition meets the cap.
bool balance_capped(const std::vector<double>& prefix, double last_extra, int k, double max_prefill,
                    const StageFits& fits, std::vector<int>* counts, double* max_decode) {
    const int n = static_cast<int>(prefix.size()) - 1;
    const double inf = std::numeric_limits<double>::infinity();
    // best[s][i]: first i layers in s stages; choice[s][i]: start of stage s-1.
    std::vector<std::vector<double>> best(k + 1, std::vector<double>(n + 1, inf));
    std::vector<std::vector<int>> choice(k + 1, std::vector<int>(n + 1, 0));
    best[0][0] = 0;
    for (int s = 1; s <= k; ++s)
        for (int i = s; i <= n - (k - s); ++i)
            for (int j = s - 1; j < i; ++j) {
                if (best[s - 1][j] == inf) continue;
                const double p = prefix[i] - prefix[j];
                if (p > max_prefill * (1 + 1e-12)) continue;
                if (fits && !fits(s - 1, j, i)) continue;
                const double v = std::max(best[s - 1][j], p + (s == k ? last_extra : 0.0));
                if (v < best[s][i] - 1e-12) {
                    best[s][i] = v;
                    choice[s][i] = j;
                }
            }
    if (best[k][n] == inf) return false;
    counts->assign(k, 0);
    int i = n;
    for (int s = k; s >= 1; --s) {
        const int j = choice[s][i];
        (*counts)[s - 1] = i - j;
        i = j;
    }
    *max_decode = best[k][n];
    return true;
}

}  // namespace

// The auto split serves both phases with one partition:
// - prefill of a prompt in C chunks (ubatches) through S stages takes about
//   (C - 1) * max_s P_s + sum_s P_s, where P_s is the layers' work of stage s (the lm_head runs
//   for one row per prompt: negligible), against C * sum P_s on one stage;
// - decode with a group of sequences per stage in flight takes max_s D_s per step, where D_s adds
//   the lm_head (per token, often several layers' worth) to the last stage, against sum D_s.
// Balancing decode alone loads the first stages with more layers, which then bound prefill
// (measured: 13 | 11 + head gave 1.46x prefill, 12 | 12 + head 1.61x, on 2 stages). So the plan
// maximizes the smaller of the two estimated speed-ups: for every cap on max_s P_s (each
// contiguous range's cost is a candidate) the DP finds the partition with the least max_s D_s.
std::vector<int> balance_two_phase(const std::vector<double>& layer_cost, double head_cost, int k, int chunks,
                                   const StageFits& fits) {
    const int n = static_cast<int>(layer_cost.size());
    std::vector<double> prefix(n + 1, 0.0);
    for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + layer_cost[i];
    const double P = prefix[n], D = P + head_cost;
    std::vector<double> caps;
    for (int j = 0; j < n; ++j)
        for (int i = j + 1; i <= n; ++i) caps.push_back(prefix[i] - prefix[j]);
    std::sort(caps.begin(), caps.end());
    caps.erase(std::unique(caps.begin(), caps.end()), caps.end());
    std::vector<int> best_counts;
    double best_score = -1;
    std::vector<int> counts;
    double max_decode = 0;
    // Caps in increasing order; stop once the prefill estimate alone is below the best score.
    for (double cap : caps) {
        if (cap < P / k * (1 - 1e-12)) continue;  // some stage holds at least P / k
        const double pp = (chunks * P) / ((chunks - 1) * cap + P);
        if (pp <= best_score) break;
        if (!balance_capped(prefix, head_cost, k, cap, fits, &counts, &max_decode)) continue;
        const double score = std::min(pp, D / max_decode);
        if (score > best_score + 1e-12) {
            best_score = score;
            best_counts = counts;
        }
    }
    return best_counts;
}

uint64_t stage_bytes(const ModelCosts& costs, uint64_t kv_bytes_per_layer, int stage, int n_stages, int first, int end) {
    uint64_t b = kv_bytes_per_layer * static_cast<uint64_t>(end - first);
    for (int l = first; l < end; ++l) b += costs.layer_bytes[l];
    if (stage == 0) b += costs.embedding_bytes;
    if (stage + 1 == n_stages) b += costs.head_bytes;
    return b;
}

// Minimax DP over contiguous splits, O(k n^2): best[s][i] = the least largest stage of the first
// i layers in s stages.
uint64_t min_fitting_budget(const ModelCosts& costs, uint64_t kv_bytes_per_layer, int k) {
    const int n = static_cast<int>(costs.layer_bytes.size());
    const uint64_t inf = std::numeric_limits<uint64_t>::max();
    if (k < 1 || k > n) return inf;
    std::vector<std::vector<uint64_t>> best(k + 1, std::vector<uint64_t>(n + 1, inf));
    best[0][0] = 0;
    for (int s = 1; s <= k; ++s)
        for (int i = s; i <= n - (k - s); ++i)
            for (int j = s - 1; j < i; ++j)
                if (best[s - 1][j] != inf)
                    best[s][i] = std::min(best[s][i], std::max(best[s - 1][j], stage_bytes(costs, kv_bytes_per_layer, s - 1, k, j, i)));
    return best[k][n];
}

std::string mib(uint64_t b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(b) / (1 << 20));
    return buf;
}

namespace {

// The --mem budget of each of S stages (0 = unchecked): one value for all, or one per stage.
std::vector<uint64_t> stage_budgets(const PlanRequest& req, int S) {
    if (req.mem_budget.size() == 1) return std::vector<uint64_t>(S, req.mem_budget[0]);
    if (static_cast<int>(req.mem_budget.size()) == S) return req.mem_budget;
    return std::vector<uint64_t>(S, 0);
}

// K + V bytes one layer holds for the request's context and slots.
uint64_t kv_bytes_per_layer(const PlanRequest& req) {
    return req.kv_bytes_per_token_layer * static_cast<uint64_t>(req.n_ctx) * req.n_seq;
}

}  // namespace

std::vector<StagePlan> make_plan(const ModelCosts& costs, const PlanRequest& req) {
    const int n_layer = static_cast<int>(costs.layer_bytes.size());
    const int S = req.n_stages;
    if (S < 1) PIPELM_THROW(ErrorCode::kInvalidArgument, "--stages ", S, ": need at least 1 stage");
    if (S > n_layer)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--stages ", S, ": the model has only ", n_layer,
                     " layers; every stage needs at least one");
    if (req.mem_budget.size() > 1 && static_cast<int>(req.mem_budget.size()) != S)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "--mem has ", req.mem_budget.size(), " values for ", S,
                     " stages: give one per stage or a single value");
    const std::vector<uint64_t> budget = stage_budgets(req, S);

    std::vector<int> counts;
    if (req.split == "auto" || req.split.empty()) {
        std::vector<double> c(costs.layer_bytes.begin(), costs.layer_bytes.end());
        const uint64_t kv_layer = kv_bytes_per_layer(req);
        StageFits fits;
        if (std::any_of(budget.begin(), budget.end(), [](uint64_t b) { return b > 0; }))
            fits = [&](int s, int first, int end) {
                return !budget[s] || stage_bytes(costs, kv_layer, s, S, first, end) <= budget[s];
            };
        counts = balance_two_phase(c, static_cast<double>(costs.head_compute), S, kPlanPrefillChunks, fits);
        if (counts.empty())
            PIPELM_THROW(ErrorCode::kOutOfMemory, "--mem: no split of the ", n_layer, " layers into ", S,
                         " stages fits (weights + KV of each stage); the smallest budget that fits is ",
                         mib(min_fitting_budget(costs, kv_layer, S)), " MiB per stage: give at least that, more stages, "
                         "a smaller --ctx or a smaller quantization");
    } else if (req.split == "mem") {
        // Layers in proportion to each stage's memory budget (all equal if none given).
        std::vector<double> w(S, 1.0);
        bool any = false;
        for (int s = 0; s < S; ++s)
            if (budget[s]) any = true;
        if (any)
            for (int s = 0; s < S; ++s) w[s] = static_cast<double>(budget[s]);
        double total = 0;
        for (double x : w) total += x;
        counts.assign(S, 1);
        int assigned = S;
        std::vector<double> exact(S);
        for (int s = 0; s < S; ++s) exact[s] = w[s] / total * n_layer;
        while (assigned < n_layer) {
            int best = 0;
            for (int s = 1; s < S; ++s)
                if (exact[s] - counts[s] > exact[best] - counts[best]) best = s;
            counts[best]++;
            assigned++;
        }
    } else {
        counts = parse_split(req.split);
        // Every mode gives its stage count (--stages/--devices/--split in-process, mpirun's ranks,
        // --workers); a list of another length would leave stages without layers or a head.
        if (static_cast<int>(counts.size()) != S)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--split ", req.split, " has ", counts.size(),
                         " stages but the pipeline has ", S, " (--stages, --devices, the ranks of mpirun or 1 + the "
                         "--workers): give one count per stage");
        int sum = 0;
        for (int c : counts) sum += c;
        if (sum != n_layer)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "--split ", req.split, " sums to ", sum,
                         " layers but the model has n_layer = ", n_layer, ": the counts must add up to ", n_layer);
    }

    std::vector<StagePlan> plan;
    double total_compute = static_cast<double>(costs.head_compute);
    for (uint64_t b : costs.layer_bytes) total_compute += static_cast<double>(b);
    int first = 0;
    for (int s = 0; s < static_cast<int>(counts.size()); ++s) {
        StagePlan p;
        p.index = s;
        p.device = s < static_cast<int>(req.devices.size()) ? req.devices[s] : "cpu";
        p.first_layer = first;
        p.last_layer = first + counts[s];
        p.has_embedding = s == 0;
        p.has_head = s + 1 == static_cast<int>(counts.size());
        double compute = 0;
        for (int l = p.first_layer; l < p.last_layer; ++l) {
            p.weight_bytes += costs.layer_bytes[l];
            compute += static_cast<double>(costs.layer_bytes[l]);
        }
        if (p.has_embedding) p.weight_bytes += costs.embedding_bytes;
        if (p.has_head) {
            p.weight_bytes += costs.head_bytes;
            compute += static_cast<double>(costs.head_compute);
        }
        p.kv_bytes = req.kv_bytes_per_token_layer * static_cast<uint64_t>(counts[s]) * req.n_ctx * req.n_seq;
        p.compute_share = total_compute > 0 ? compute / total_compute : 0;
        if (s < static_cast<int>(budget.size()) && budget[s] && p.weight_bytes + p.kv_bytes > budget[s])
            PIPELM_THROW(ErrorCode::kOutOfMemory, "stage ", s, " (", p.device, ", layers ", p.first_layer, "-",
                         p.last_layer - 1, ") needs ", mib(p.weight_bytes + p.kv_bytes), " MiB (weights ",
                         mib(p.weight_bytes), " + KV ", mib(p.kv_bytes), ") but its --mem budget is ", mib(budget[s]),
                         " MiB: use more stages, another --split, a smaller --ctx or a smaller quantization");
        plan.push_back(p);
        first = p.last_layer;
    }
    return plan;
}

std::vector<StagePlan> replan_over_survivors(const ModelCosts& costs, const PlanRequest& req,
                                             const std::vector<StagePlan>& plan, const std::vector<int>& lost,
                                             std::vector<int>* survivor, PlanRequest* next) {
    const int S = static_cast<int>(plan.size());
    const int n_layer = static_cast<int>(costs.layer_bytes.size());
    std::vector<bool> gone(S, false);
    for (int s : lost) {
        if (s < 0 || s >= S) PIPELM_THROW(ErrorCode::kInvalidArgument, "replan: stage ", s, " of ", S);
        gone[s] = true;
    }
    if (gone[0]) PIPELM_THROW(ErrorCode::kPeerLost, "stage 0 is lost: it holds the caller and the embedding");
    std::vector<int> keep;
    for (int s = 0; s < S; ++s)
        if (!gone[s]) keep.push_back(s);
    const int k = static_cast<int>(keep.size()) - 1;  // surviving stages after stage 0
    const int L0 = plan[0].last_layer;
    if (k < 1)
        PIPELM_THROW(ErrorCode::kPeerLost, "no stage but stage 0 survives to take layers ", L0, "-", n_layer - 1);
    const std::vector<uint64_t> budget = stage_budgets(req, S);
    const uint64_t kv_layer = kv_bytes_per_layer(req);
    const int Sn = k + 1;
    // Layers [L0, n_layer) over the k survivors; new stage j + 1 is old stage keep[j + 1].
    std::vector<double> c(costs.layer_bytes.begin() + L0, costs.layer_bytes.end());
    const StageFits fits = [&](int j, int first, int end) {
        const uint64_t b = budget[keep[j + 1]];
        return !b || stage_bytes(costs, kv_layer, j + 1, Sn, first + L0, end + L0) <= b;
    };
    std::vector<int> counts = balance_two_phase(c, static_cast<double>(costs.head_compute), k, kPlanPrefillChunks, fits);
    if (counts.empty())
        PIPELM_THROW(ErrorCode::kOutOfMemory, "the ", k, " surviving stage(s) cannot hold layers ", L0, "-", n_layer - 1,
                     " within their --mem budgets (weights + KV of each stage)");
    PlanRequest r = req;
    r.n_stages = Sn;
    r.split = std::to_string(L0);
    for (int x : counts) r.split += "," + std::to_string(x);
    r.mem_budget.clear();
    r.devices.clear();
    for (int s : keep) {
        r.mem_budget.push_back(budget[s]);
        r.devices.push_back(s < static_cast<int>(req.devices.size()) ? req.devices[s] : "cpu");
    }
    if (survivor) *survivor = keep;
    std::vector<StagePlan> out = make_plan(costs, r);
    if (next) *next = std::move(r);
    return out;
}

std::string format_plan(const std::vector<StagePlan>& plan) {
    std::ostringstream os;
    os << "stage  device    layers        weights MiB   KV MiB   compute\n";
    for (const auto& p : plan) {
        char buf[160];
        char layers[32];
        std::snprintf(layers, sizeof layers, "%d-%d (%d)", p.first_layer, p.last_layer - 1, p.last_layer - p.first_layer);
        std::snprintf(buf, sizeof buf, "%5d  %-8s  %-12s  %11s  %7s   %5.1f%%%s%s\n", p.index, p.device.c_str(), layers,
                      mib(p.weight_bytes).c_str(), mib(p.kv_bytes).c_str(), 100.0 * p.compute_share,
                      p.has_embedding ? " +embd" : "", p.has_head ? " +head" : "");
        os << buf;
    }
    return os.str();
}

}  // namespace pipelm::pipeline
