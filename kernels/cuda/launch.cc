// Host-side launch planning of the CUDA kernels (launch.h). Plain C++: built with g++ into
// pipelm_cuda_host, which the CUDA kernels and the GPU-free tests link.
#include "kernels/cuda/launch.h"

#include <algorithm>
#include <sstream>

#include "runtime/base/error.h"

namespace pipelm::kernels::cuda {
namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

}  // namespace

const char* accum_name(Accum a) {
    switch (a) {
        case Accum::kF32: return "f32";
        case Accum::kBF16: return "bf16";
        case Accum::kF16: return "f16";
    }
    return "?";
}

DeviceLimits sm80_limits() {
    DeviceLimits d;
    d.name = "sm_80";
    d.smem_per_block_optin = 163 << 10;
    return d;
}

DeviceLimits sm90_limits() {
    DeviceLimits d;
    d.name = "sm_90";
    d.smem_per_block_optin = 227 << 10;
    return d;
}

std::string launch_problem(const LaunchConfig& c, const DeviceLimits& d) {
    std::ostringstream os;
    const Dim3& g = c.grid;
    const Dim3& b = c.block;
    if (g.x < 1 || g.y < 1 || g.z < 1 || b.x < 1 || b.y < 1 || b.z < 1)
        os << "empty grid " << g.x << "x" << g.y << "x" << g.z << " or block " << b.x << "x" << b.y << "x" << b.z;
    else if (g.x > d.max_grid_x || g.y > d.max_grid_y || g.z > d.max_grid_z)
        os << "grid " << g.x << "x" << g.y << "x" << g.z << " exceeds " << d.name << "'s " << d.max_grid_x << "x"
           << d.max_grid_y << "x" << d.max_grid_z;
    else if (b.x * b.y * b.z > d.max_threads_per_block || b.z > 64)
        os << "block of " << b.x * b.y * b.z << " threads exceeds " << d.name << "'s " << d.max_threads_per_block;
    else if (c.static_smem + c.dynamic_smem > d.smem_per_block_optin)
        os << (c.static_smem + c.dynamic_smem) << " bytes of shared memory (" << c.static_smem << " static + "
           << c.dynamic_smem << " dynamic) exceed " << d.name << "'s " << d.smem_per_block_optin << " per block";
    else if (c.static_smem > d.smem_per_block)
        os << c.static_smem << " bytes of static shared memory exceed " << d.smem_per_block;
    const std::string s = os.str();
    return s.empty() ? s : std::string(c.kernel) + ": " + s;
}

void check_launch(const LaunchConfig& c, const DeviceLimits& d) {
    const std::string p = launch_problem(c, d);
    PIPELM_CHECK(p.empty(), "CUDA launch: ", p);
}

LaunchConfig row_launch(const char* kernel, int64_t n_rows, int threads) {
    LaunchConfig c;
    c.kernel = kernel;
    c.grid.x = n_rows;
    c.block.x = threads;
    return c;
}

LaunchConfig grid_stride_launch(const char* kernel, int64_t n, int threads, int64_t max_blocks) {
    LaunchConfig c;
    c.kernel = kernel;
    c.grid.x = std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, max_blocks));
    c.block.x = threads;
    return c;
}

LaunchConfig gemv_launch(int64_t rows) {
    LaunchConfig c;
    c.kernel = "gemv";
    c.grid.x = (rows + kGemvWarps - 1) / kGemvWarps;
    c.block.x = kGemvThreads;
    return c;
}

MatmulPath matmul_path(GgmlType type, int64_t n_tokens, Accum acc) {
    if (acc == Accum::kF32 && n_tokens <= kGemvMaxTokens) return MatmulPath::kGemv;
    if (type == GgmlType::kF32) return MatmulPath::kSgemm;
    if ((type == GgmlType::kF16 || type == GgmlType::kBF16) && acc != Accum::kF32) return MatmulPath::kGemm16;
    return MatmulPath::kDequantSgemm;
}

const char* matmul_path_name(MatmulPath p) {
    switch (p) {
        case MatmulPath::kGemv: return "gemv";
        case MatmulPath::kSgemm: return "sgemm";
        case MatmulPath::kDequantSgemm: return "dequantize+sgemm";
        case MatmulPath::kGemm16: return "gemm16";
    }
    return "?";
}

int64_t dequant_chunk_rows(int64_t rows, int64_t cols) {
    const size_t row = static_cast<size_t>(std::max<int64_t>(cols, 1)) * sizeof(float);
    const int64_t by_bytes = static_cast<int64_t>(kDequantChunkBytes / row);
    return std::max<int64_t>(1, std::min<int64_t>(rows, by_bytes));
}

Gemm16Layout gemm16_layout(GgmlType type, int64_t rows, int64_t cols, int64_t n_tokens, Accum acc) {
    Gemm16Layout L;
    const bool f16 = type == GgmlType::kF16;
    L.half_acc = f16 && acc == Accum::kF16;
    L.scaled = f16 && !L.half_acc;
    size_t at = 0;
    L.act = at, at += align_up(static_cast<size_t>(n_tokens) * cols * 2);
    if (L.scaled) L.scale = at, at += align_up(static_cast<size_t>(n_tokens) * sizeof(float));
    if (L.half_acc) L.c16 = at, at += align_up(static_cast<size_t>(n_tokens) * rows * 2);
    L.total = at;
    return L;
}

size_t matmul_workspace_bytes(GgmlType type, int64_t rows, int64_t cols, int64_t n_tokens, Accum acc) {
    if (n_tokens <= 0 || rows <= 0) return 0;
    switch (matmul_path(type, n_tokens, acc)) {
        case MatmulPath::kGemv:
        case MatmulPath::kSgemm: return 0;
        case MatmulPath::kGemm16: return gemm16_layout(type, rows, cols, n_tokens, acc).total;
        case MatmulPath::kDequantSgemm:
            return align_up(static_cast<size_t>(dequant_chunk_rows(rows, cols)) * cols * sizeof(float));
    }
    return 0;
}

size_t attention_dynamic_smem(int head_dim, int max_kv, bool scores_in_shared) {
    return (static_cast<size_t>((head_dim + 3) & ~3) + (scores_in_shared ? static_cast<size_t>(max_kv) : 0)) *
           sizeof(float);
}

bool attention_scores_fit_shared(int head_dim, int max_kv, size_t static_smem, const DeviceLimits& d) {
    return static_smem + attention_dynamic_smem(head_dim, max_kv, true) <= d.smem_per_block_optin;
}

size_t attention_scores_bytes(int64_t tokens, int n_head, int max_kv) {
    return static_cast<size_t>(tokens) * n_head * static_cast<size_t>(max_kv) * sizeof(float);
}

AttentionPlan plan_attention(const AttentionShape& s, size_t static_smem, const DeviceLimits& d, bool global_scratch,
                             size_t scratch_bytes) {
    PIPELM_CHECK(s.n_tokens > 0 && s.n_head > 0 && s.head_dim > 0 && s.max_kv > 0, "attention plan: empty shape (",
                 s.n_tokens, " tokens, ", s.n_head, " heads, head_dim ", s.head_dim, ", max_kv ", s.max_kv, ")");
    AttentionPlan p;
    p.scores_in_shared = !global_scratch;
    p.tokens_per_launch = s.n_tokens;
    if (global_scratch && scratch_bytes > 0) {
        const size_t per_token = attention_scores_bytes(1, s.n_head, s.max_kv);
        PIPELM_CHECK(scratch_bytes >= per_token, "attention: a scores scratch of ", scratch_bytes,
                     " bytes holds less than one token's ", per_token, " (", s.n_head, " heads x ", s.max_kv, " keys)");
        p.tokens_per_launch = std::min<int64_t>(s.n_tokens, static_cast<int64_t>(scratch_bytes / per_token));
    }
    // One block per (token, head), in x (2^31 - 1 blocks; y and z would stop at 65535).
    const int64_t max_tokens_by_grid = d.max_grid_x / s.n_head;
    PIPELM_CHECK(max_tokens_by_grid >= 1, "attention: ", s.n_head, " heads exceed the grid");
    p.tokens_per_launch = std::min(p.tokens_per_launch, max_tokens_by_grid);
    p.launch.kernel = "attention";
    p.launch.grid.x = p.tokens_per_launch * s.n_head;
    p.launch.block.x = kAttentionThreads;
    p.launch.static_smem = static_smem;
    p.launch.dynamic_smem = attention_dynamic_smem(s.head_dim, s.max_kv, p.scores_in_shared);
    if (p.scores_in_shared)
        PIPELM_CHECK(static_smem + p.launch.dynamic_smem <= d.smem_per_block_optin, "attention: ", s.max_kv,
                     " scores need ", static_smem + p.launch.dynamic_smem, " bytes of shared memory, above ", d.name,
                     "'s ", d.smem_per_block_optin, " per block; pass a global scores scratch");
    check_launch(p.launch, d);
    return p;
}

}  // namespace pipelm::kernels::cuda
