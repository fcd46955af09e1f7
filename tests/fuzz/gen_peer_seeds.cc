// One-off generator of the seed corpora of the peer fuzz targets (peer_fuzzers.cmake): a few
// valid messages each, written to tests/data/fuzz/<target>/. Not built by CMake; run from the
// repository root:
//   g++ -std=c++17 -I. tests/fuzz/gen_peer_seeds.cc transport/frame.cc runtime/base/error.cc
//       -o /tmp/gen_peer_seeds && /tmp/gen_peer_seeds tests/data/fuzz
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "launcher/session.h"
#include "runtime/pipeline/protocol.h"
#include "transport/frame.h"

namespace fs = std::filesystem;
using namespace pipelm;

static fs::path g_root;

static void put(const std::string& target, const std::string& name, const std::string& bytes) {
    const fs::path dir = g_root / target;
    fs::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary) << bytes;
}

template <class T>
static void put_msg(const std::string& target, const std::string& name, const T& v) {
    put(target, name, pipeline::encode(v));
}

static std::string frame(transport::wire::FrameKind kind, uint32_t tag, const std::string& control,
                         const std::string& payload) {
    transport::wire::FrameHeader h;
    h.kind = kind;
    h.tag = tag;
    h.control_bytes = static_cast<uint32_t>(control.size());
    h.payload_bytes = payload.size();
    uint8_t b[transport::wire::kFrameHeaderBytes];
    transport::wire::encode_frame_header(h, b);
    return std::string(reinterpret_cast<const char*>(b), sizeof b) + control + payload;
}

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    g_root = argv[1];
    using transport::wire::FrameKind;

    // fuzz_frame: one or several frames in a stream.
    put("fuzz_frame", "data", frame(FrameKind::kData, 4, "ctl", std::string(16, '\x01')));
    put("fuzz_frame", "heartbeat_abort", frame(FrameKind::kHeartbeat, 0, "", "") + frame(FrameKind::kAbort, 0, "boom", ""));
    put("fuzz_frame", "shutdown_close",
        frame(FrameKind::kData, 5, std::string(40, 'c'), "") + frame(FrameKind::kShutdown, 0, "", "") +
            frame(FrameKind::kClose, 0, "", ""));

    // fuzz_greeting: a hello of our version and a proof, and one of another version.
    transport::auth::Nonce n{};
    for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(i * 7);
    const auto hello = transport::wire::encode_client_hello(n);
    const auto old = transport::wire::encode_client_hello(n, 1);
    put("fuzz_greeting", "hello_proof",
        std::string(reinterpret_cast<const char*>(hello.data()), hello.size()) + std::string(32, '\x5a'));
    put("fuzz_greeting", "hello_v1", std::string(reinterpret_cast<const char*>(old.data()), old.size()));

    // fuzz_bootstrap_msg: layout byte 0 = Assign, 1 = stage message.
    transport::wire::ByteWriter a;
    a.u64(0x1234567890abcdefULL);
    a.i32(1);
    a.i32(3);
    a.u32(30000);
    a.str("10.0.0.2:5555");
    a.str(pipeline::encode(launcher::WorkerJob{}));
    put("fuzz_bootstrap_msg", "assign", std::string(1, '\0') + a.take());
    transport::wire::ByteWriter s;
    s.u64(42);
    s.i32(2);
    put("fuzz_bootstrap_msg", "stage_msg", std::string(1, '\1') + s.take());

    pipeline::Hello h;
    h.model_id = "0123456789abcdef";
    h.model_name = "model.gguf";
    put_msg("fuzz_msg_hello", "empty_plan", h);
    h.plan = {{0, 19}, {20, 39}};
    put_msg("fuzz_msg_hello", "two_stages", h);

    pipeline::HelloAck ack;
    put_msg("fuzz_msg_hello_ack", "stage0", ack);
    ack.stage = 3;
    ack.note = "ready";
    put_msg("fuzz_msg_hello_ack", "stage3", ack);

    pipeline::SeqStart ss;
    put_msg("fuzz_msg_seq_start", "default", ss);
    ss.slot = 2;
    ss.history = {151331, 151333, 9703, 11};
    ss.sampler.temperature = 0;
    put_msg("fuzz_msg_seq_start", "greedy_history", ss);

    pipeline::UbatchHeader u;
    u.id = 7;
    u.seq = {0, 0, 1};
    u.pos = {0, 1, 0};
    u.out_rows = {1, 2};
    u.sample = 1;
    u.busy_s = {0.01};
    put_msg("fuzz_msg_ubatch", "sample", u);
    u.want_logits = 1;
    u.wire = 1;
    u.busy_s = {0.01, 0.02};
    put_msg("fuzz_msg_ubatch", "logits_bf16", u);

    pipeline::ResultHeader r;
    r.id = 7;
    r.seq = {0, 1};
    r.tokens = {11, 12};
    r.busy_s = {0.01, 0.02};
    put_msg("fuzz_msg_result", "sampled", r);
    r.tokens.clear();
    r.n_logit_rows = 2;
    put_msg("fuzz_msg_result", "logits", r);

    launcher::WorkerJob j;
    put_msg("fuzz_msg_worker_job", "default", j);
    j.model_path = "/models/glm-4-9b.gguf";
    j.model_id = "0123456789abcdef";
    j.first_layer = 20;
    j.last_layer = 39;
    j.n_stages = 2;
    j.n_ctx = 4096;
    j.n_seq = 2;
    j.threads = 8;
    j.device = "cuda:0";
    j.act_quant = "q8";
    put_msg("fuzz_msg_worker_job", "stage1", j);
    return 0;
}
