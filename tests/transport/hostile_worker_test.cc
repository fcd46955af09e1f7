// Hostile peers against the pipeline over 127.0.0.1: a last stage that lies in its results
// (against the coordinator's Engine), control messages whose lengths lie (against the decoder),
// and an authenticated but hostile coordinator against a real `pipelm worker` process (lying
// job, oversized frames, a path the worker does not serve, absurd thread counts). Each test
// asserts the clean error and that memory (the worker's peak resident set) and time stay bounded.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "launcher/session.h"
#include "runtime/base/error.h"
#include "runtime/base/thread_pool.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/stage.h"
#include "runtime/pipeline/protocol.h"
#include "runtime/pipeline/stage_runner.h"
#include "tests/testing/process.h"
#include "tests/transport/hostile_util.h"
#include "tests/transport/tcp_test_util.h"
#include "transport/frame.h"

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;
using pipeline::HelloAck;
using pipeline::ResultHeader;
using pipeline::UbatchHeader;

const std::string kTiny = std::string(PIPELM_TEST_DATA) + "/models/glm4-tiny/model.gguf";

// ---- the coordinator against a lying last stage ---------------------------------------------

// Changes an honest result (ids, slots, rows and bytes as asked) into a hostile one.
using Corrupt = std::function<void(ResultHeader& r, std::vector<uint8_t>& payload, int64_t n_vocab)>;

// Plays the last stage on `link`: acknowledges the handshake and answers every ubatch with a
// corrupted result, until the coordinator shuts down or the link fails.
void lying_last_stage(Link& link, int64_t n_vocab, const Corrupt& corrupt) {
    try {
        for (;;) {
            Message m = link.recv(20s);
            if (m.kind == MsgKind::kShutdown) return;
            if (m.tag == pipeline::kHello) {
                HelloAck ack;
                ack.stage = 1;
                link.send(pipeline::make_message(pipeline::kHelloAck, ack));
                continue;
            }
            if (m.tag != pipeline::kUbatch) continue;
            const UbatchHeader h = pipeline::decode<UbatchHeader>(m.control, "ubatch");
            ResultHeader r;
            r.id = h.id;
            for (int32_t row : h.out_rows) r.seq.push_back(h.seq[row]);
            if (h.sample) r.tokens.assign(h.out_rows.size(), 1);
            r.n_logit_rows = h.want_logits ? static_cast<int32_t>(h.out_rows.size()) : 0;
            r.busy_s = h.busy_s;
            r.busy_s.push_back(0.001);
            std::vector<uint8_t> payload(static_cast<size_t>(r.n_logit_rows) * n_vocab * sizeof(float));
            corrupt(r, payload, n_vocab);
            link.send(pipeline::make_message(pipeline::kResult, r, std::move(payload)));
        }
    } catch (const Error&) {
        // The coordinator aborted or closed the link: its side of the test decides.
    }
}

struct Lie {
    const char* name;
    bool sample;  // drive decode_sample (sampled ids) instead of prefill_logits (all logits)
    Corrupt corrupt;
    const char* says;  // in the coordinator's error
};

class LyingLastStage : public ::testing::TestWithParam<Lie> {};

// {coordinator's end, labelled "stage 1" as the Engine sees it; the lying stage's end}.
std::pair<std::shared_ptr<Link>, std::shared_ptr<Link>> coordinator_and_last_stage() {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken);
    std::shared_ptr<Link> stage_end;
    std::thread acceptor([&] {
        try {
            stage_end = listener->accept(10s, "stage 0");
        } catch (const Error& e) {
            ADD_FAILURE() << e.what();
        }
    });
    TcpOptions opts;
    opts.peer_label = "stage 1";
    std::shared_ptr<Link> coordinator_end;
    try {
        coordinator_end = tcp_connect(listener->address(), kToken, 10s, opts);
    } catch (const Error& e) {
        ADD_FAILURE() << e.what();
    }
    acceptor.join();
    return {coordinator_end, stage_end};
}

// Issue 17 §2.1: the coordinator copied as many logit rows as the result claimed into a buffer
// sized for the rows it asked for (one extra row: heap corruption; 5000: SIGSEGV).
TEST_P(LyingLastStage, IsAProtocolErrorNamingTheStage) {
    const Lie& lie = GetParam();
    auto file = gguf::GgufFile::open(kTiny);
    const model::Glm4Config cfg = model::Glm4Config::from_gguf(*file);
    ThreadPool pool(1);
    model::StageOptions so;
    so.n_ctx = 64;
    model::StageSpec spec;
    spec.index = 0;
    spec.first_layer = 0;
    spec.last_layer = 1;
    spec.has_embedding = true;
    spec.has_head = false;
    auto stage0 = model::make_stage(file, cfg, spec, so, pool);
    auto [coordinator_end, stage_end] = coordinator_and_last_stage();
    ASSERT_TRUE(coordinator_end && stage_end);
    std::thread last([&, link = stage_end] { lying_last_stage(*link, cfg.n_vocab, lie.corrupt); });
    pipeline::EngineOptions eo;
    eo.n_stages = 2;
    eo.model_id = "test";
    eo.plan = {{0, 1}, {1, cfg.n_layer}};
    eo.result_timeout = 20s;
    try {
        pipeline::Engine engine(*stage0, StageLinks{nullptr, coordinator_end, coordinator_end}, eo);
        engine.handshake();
        if (lie.sample)
            engine.decode_sample(0, 1, 0);
        else
            engine.prefill_logits(0, {1, 2, 3}, 0, true);
        ADD_FAILURE() << lie.name << ": the coordinator took the lying result";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(e.code(), ErrorCode::kProtocol) << what;
        EXPECT_NE(what.find("result from stage 1 (tcp 127.0.0.1:"), std::string::npos) << what;
        EXPECT_NE(what.find(lie.says), std::string::npos) << what;
    }
    last.join();
}

INSTANTIATE_TEST_SUITE_P(
    Results, LyingLastStage,
    ::testing::Values(
        Lie{"one_extra_logit_row", false,
            [](ResultHeader& r, std::vector<uint8_t>& p, int64_t V) {
                r.n_logit_rows += 1;
                p.resize(p.size() + V * sizeof(float));
            },
            "logit rows"},
        Lie{"5000_extra_logit_rows", false,
            [](ResultHeader& r, std::vector<uint8_t>& p, int64_t V) {
                r.n_logit_rows += 5000;
                p.resize(p.size() + 5000 * V * sizeof(float));
            },
            "logit rows"},
        Lie{"logit_bytes_short", false, [](ResultHeader&, std::vector<uint8_t>& p, int64_t) { p.resize(p.size() - 4); },
            "bytes of logits"},
        Lie{"another_ubatch_id", false, [](ResultHeader& r, std::vector<uint8_t>&, int64_t) { r.id += 7; },
            "ubatch id"},
        Lie{"another_slot", false, [](ResultHeader& r, std::vector<uint8_t>&, int64_t) { r.seq[1] = 3; }, "slot 3"},
        Lie{"a_slot_missing", false, [](ResultHeader& r, std::vector<uint8_t>&, int64_t) { r.seq.pop_back(); },
            "output slots"},
        Lie{"extra_stage_times", false, [](ResultHeader& r, std::vector<uint8_t>&, int64_t) { r.busy_s.push_back(1); },
            "stage times"},
        Lie{"non_finite_stage_time", false,
            [](ResultHeader& r, std::vector<uint8_t>&, int64_t) { r.busy_s[0] = std::nan(""); }, "stage time"},
        Lie{"sampled_id_outside_the_vocabulary", true,
            [](ResultHeader& r, std::vector<uint8_t>&, int64_t V) { r.tokens[0] = static_cast<int32_t>(V + 5); },
            "outside the vocabulary"},
        Lie{"no_sampled_id", true, [](ResultHeader& r, std::vector<uint8_t>&, int64_t) { r.tokens.clear(); },
            "sampled ids"},
        Lie{"logits_nobody_asked_for", true,
            [](ResultHeader& r, std::vector<uint8_t>& p, int64_t V) {
                r.n_logit_rows = 1;
                p.resize(V * sizeof(float));
            },
            "logit rows"}),
    [](const ::testing::TestParamInfo<Lie>& i) { return std::string(i.param.name); });

// ---- control messages whose lengths lie -------------------------------------------------------

// Portable-binary bytes: the endianness byte, then `fields` as little-endian u64 each, padded
// with 'x' to `total` bytes.
std::string lying_message(const std::vector<uint64_t>& fields, size_t total) {
    std::string s(1, '\1');
    for (uint64_t v : fields)
        for (int i = 0; i < 8; ++i) s += static_cast<char>(v >> (8 * i));
    s.resize(std::max(total, s.size()), 'x');
    return s;
}

// Issue 17 §2.2: cereal allocated the container sizes read from the peer before any check.
TEST(HostileDecode, LyingLengthsAllocateNothing) {
    struct Case {
        const char* what;
        std::string bytes;
        std::function<void(const std::string&)> decode;
    };
    const std::vector<Case> cases = {
        // UbatchHeader: id, then seq claims 2^28 int32 (1 GiB).
        {"ubatch", lying_message({7, uint64_t(1) << 28}, 63),
         [](const std::string& b) { pipeline::decode<UbatchHeader>(b, "ubatch"); }},
        // ResultHeader: id, then tokens... seq claims 2^28 int32.
        {"result", lying_message({7, uint64_t(1) << 28}, 63),
         [](const std::string& b) { pipeline::decode<ResultHeader>(b, "result"); }},
        // WorkerJob: model_path claims 1 GiB.
        {"worker job", lying_message({uint64_t(1) << 30}, 63),
         [](const std::string& b) { pipeline::decode<launcher::WorkerJob>(b, "worker job"); }},
        // Hello: version u32 then model_id claims 4 GiB.
        {"hello", std::string("\1\1\0\0\0", 5) + lying_message({uint64_t(1) << 32}, 58).substr(1),
         [](const std::string& b) { pipeline::decode<pipeline::Hello>(b, "hello"); }},
    };
    for (const auto& c : cases) {
        const int64_t grown = peak_rss_growth([&] {
            try {
                c.decode(c.bytes);
                ADD_FAILURE() << c.what << ": decoded";
            } catch (const Error& e) {
                EXPECT_EQ(e.code(), ErrorCode::kProtocol) << e.what();
                EXPECT_NE(std::string(e.what()).find("malformed " + std::string(c.what)), std::string::npos) << e.what();
            }
        });
        if (grown < 0) GTEST_SKIP() << "cannot reset the peak resident set (/proc/self/clear_refs)";
        EXPECT_LT(grown, int64_t(16) << 20) << c.what << ": the peak resident set grew by " << (grown >> 20)
                                             << " MiB on a " << c.bytes.size() << "-byte message";
    }
}

TEST(HostileDecode, HonestMessagesStillRoundTrip) {
    UbatchHeader h;
    h.id = 42;
    h.seq = {0, 0, 1};
    h.pos = {5, 6, 0};
    h.out_rows = {2};
    h.sample = 1;
    h.busy_s = {0.5, 0.25};
    const UbatchHeader d = pipeline::decode<UbatchHeader>(pipeline::encode(h), "ubatch");
    EXPECT_EQ(d.id, 42u);
    EXPECT_EQ(d.seq, h.seq);
    EXPECT_EQ(d.pos, h.pos);
    EXPECT_EQ(d.out_rows, h.out_rows);
    EXPECT_EQ(d.sample, 1);
    EXPECT_EQ(d.busy_s, h.busy_s);
    launcher::WorkerJob j;
    j.model_path = "/models/a.gguf";
    j.model_id = "abc";
    j.n_ctx = 4096;
    const launcher::WorkerJob dj = pipeline::decode<launcher::WorkerJob>(pipeline::encode(j), "worker job");
    EXPECT_EQ(dj.model_path, j.model_path);
    EXPECT_EQ(dj.n_ctx, 4096);
    EXPECT_EQ(dj.device, "cpu");
    // Trailing bytes are a malformed message too.
    EXPECT_THROW(pipeline::decode<UbatchHeader>(pipeline::encode(h) + "x", "ubatch"), Error);
}

// ---- a hostile coordinator against a real worker process --------------------------------------

constexpr uint32_t kTagAssign = 0x504C4201;  // transport/tcp_bootstrap.h
constexpr uint32_t kTagReady = 0x504C4203;
constexpr uint32_t kTagStart = 0x504C4204;
constexpr uint64_t kSession = 0x5eed;

class HostileCoordinator : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = pipelm::testing::make_temp_dir("pipelm-hostile");
        token_ = pipelm::testing::write_token_file(dir_ + "/token", 17);
        so_.cwd = dir_;
        auto file = gguf::GgufFile::open(kTiny);
        cfg_ = model::Glm4Config::from_gguf(*file);
    }
    void TearDown() override {
        worker_.proc.kill_all();
        if (!HasFailure()) std::filesystem::remove_all(dir_);
        else std::printf("logs kept in %s\n", dir_.c_str());
    }
    std::string path(const std::string& name) const { return dir_ + "/" + name; }

    // `pipelm worker -m glm4-tiny` (serving jobs until killed); false if it did not start.
    bool start_worker() {
        worker_ = pipelm::testing::start_worker(path("worker.log"), token_, {"--threads", "1", "-m", kTiny}, so_);
        return !worker_.address.empty();
    }
    int64_t worker_peak_kib() const { return proc_status_kib(worker_.proc.pid(), "VmHWM"); }

    std::shared_ptr<Link> connect() {
        TcpOptions opts;
        opts.peer_label = "worker";
        return tcp_connect(worker_.address, read_token_file(token_), 10s, opts);
    }

    // A job the worker would serve: the last stage (its last layer) of glm4-tiny in 2 stages.
    launcher::WorkerJob honest_job() const {
        launcher::WorkerJob j;
        j.model_path = kTiny;
        j.model_id = "any";
        j.first_layer = cfg_.n_layer - 1;
        j.last_layer = cfg_.n_layer;
        j.n_stages = 2;
        j.n_ctx = 64;
        j.n_seq = 1;
        j.threads = 1;
        return j;
    }

    static void send_assign(Link& link, const std::string& job) {
        wire::ByteWriter w;
        w.u64(kSession);
        w.i32(1);     // stage
        w.i32(2);     // stages
        w.u32(5000);  // ms for the wiring
        w.str("");    // no successor: stage 1 is the last
        w.str(job);
        Message m;
        m.tag = kTagAssign;
        m.control = w.take();
        link.send(std::move(m));
    }

    // Answers a Ready with Start (a worker that took the job); returns what the worker sent
    // next, or its abort reason as "refused: ...".
    static std::string drive(Link& link, std::chrono::milliseconds timeout = 15s) {
        try {
            Message m = link.recv(timeout);
            if (m.tag == kTagReady) {
                wire::ByteWriter w;
                w.u64(kSession);
                w.i32(0);
                Message start;
                start.tag = kTagStart;
                start.control = w.take();
                link.send(std::move(start));
                return "ready";
            }
            return "tag " + std::to_string(m.tag);
        } catch (const Error& e) {
            return std::string("refused: ") + e.what();
        }
    }

    std::string dir_, token_;
    pipelm::testing::SpawnOptions so_;
    pipelm::testing::Worker worker_;
    model::Glm4Config cfg_;
};

// Issue 17 §2.2: a 63-byte job made a worker allocate 4 GiB for 17 s.
TEST_F(HostileCoordinator, AJobWithALyingLengthAllocatesNothing) {
    ASSERT_TRUE(start_worker()) << worker_.proc.log();
    auto link = connect();
    const int64_t before = worker_peak_kib();
    send_assign(*link, lying_message({uint64_t(1) << 30}, 63));
    std::string got = drive(*link);
    if (got == "ready") got = drive(*link);  // a worker that decodes the job only once it runs
    EXPECT_NE(got.find("refused: "), std::string::npos) << got;
    EXPECT_NE(got.find("malformed worker job"), std::string::npos) << got;
    const int64_t after = worker_peak_kib();
    EXPECT_LT(after - before, 64 << 10) << "the worker's peak resident set grew by " << (after - before) / 1024
                                        << " MiB on a 63-byte job";
    EXPECT_TRUE(worker_.proc.running()) << worker_.proc.log();
}

// Issue 17 §2.3: a frame that announces 1 GiB before any job: refused by the bootstrap limits,
// nothing allocated.
TEST_F(HostileCoordinator, AFrameBeyondTheBootstrapLimitsAllocatesNothing) {
    ASSERT_TRUE(start_worker()) << worker_.proc.log();
    const int64_t before = worker_peak_kib();
    RawClient raw(pipelm::transport::parse_host_port(worker_.address).port);
    ASSERT_TRUE(raw_authenticate(raw, read_token_file(token_)));
    wire::FrameHeader h;
    h.kind = wire::FrameKind::kData;
    h.tag = kTagAssign;
    h.payload_bytes = uint64_t(1) << 30;
    std::vector<uint8_t> hdr(wire::kFrameHeaderBytes);
    wire::encode_frame_header(h, hdr.data());
    raw.write(hdr);
    try {
        raw.write(std::vector<uint8_t>(size_t(1) << 20, 1));  // a worker that refuses closes first
    } catch (const std::exception&) {
    }
    std::this_thread::sleep_for(500ms);
    const int64_t after = worker_peak_kib();
    EXPECT_LT(after - before, 64 << 10) << "the worker's peak resident set grew by " << (after - before) / 1024
                                        << " MiB on a frame announcing 1 GiB";
    EXPECT_TRUE(raw.closed_by_peer(5s)) << "the worker kept the connection";
    EXPECT_TRUE(worker_.proc.wait_for_text("over the limit", 5s)) << worker_.proc.log();
    EXPECT_TRUE(worker_.proc.running()) << worker_.proc.log();
}

// Once a job is set up, a ubatch larger than its plan allows (context x slots x hidden floats) is
// refused by the link before it is allocated.
TEST_F(HostileCoordinator, AUbatchBeyondThePlanIsRefusedByTheLink) {
    ASSERT_TRUE(start_worker()) << worker_.proc.log();
    auto link = connect();
    send_assign(*link, pipeline::encode(honest_job()));
    ASSERT_EQ(drive(*link), "ready") << worker_.proc.log();
    UbatchHeader u;
    u.seq = {0};
    u.pos = {0};
    u.busy_s = {0.0};
    Message m = pipeline::make_message(pipeline::kUbatch, u, std::vector<uint8_t>(size_t(8) << 20, 0));
    link->send(std::move(m));
    const std::string got = drive(*link);
    EXPECT_NE(got.find("refused: "), std::string::npos) << got;
    // The link closes on a protocol violation; the worker logs why.
    const size_t plan_bytes = size_t(64) * cfg_.n_embd * sizeof(float);
    EXPECT_TRUE(worker_.proc.wait_for_text("payload bytes, over the limit of " + std::to_string(plan_bytes), 5s))
        << worker_.proc.log();
    EXPECT_TRUE(worker_.proc.running()) << worker_.proc.log();
}

// Issue 17 §2.6: an authenticated coordinator made the worker open any path and learnt its
// first bytes from the error ("magic at offset 0 is 'root'" for /etc/shadow).
TEST_F(HostileCoordinator, AJobForAFileTheWorkerDoesNotServeIsRefusedUnread) {
    ASSERT_TRUE(start_worker()) << worker_.proc.log();
    const std::string secret = path("shadow");
    {
        std::ofstream f(secret);
        f << "root:$6$SECRETSALT$SECRETHASH:19000:0:99999:7:::\n";
    }
    auto link = connect();
    launcher::WorkerJob j = honest_job();
    j.model_path = secret;
    send_assign(*link, pipeline::encode(j));
    std::string got = drive(*link);
    if (got == "ready") got = drive(*link, 5s);
    EXPECT_NE(got.find("refused: "), std::string::npos) << got;
    EXPECT_NE(got.find("does not serve model '" + secret + "'"), std::string::npos) << got;
    EXPECT_EQ(got.find("root"), std::string::npos) << "the worker revealed the file's bytes: " << got;
    EXPECT_EQ(got.find("SECRET"), std::string::npos) << "the worker revealed the file's bytes: " << got;
    EXPECT_EQ(got.find(std::string(PIPELM_TEST_DATA)), std::string::npos) << "it names only file names: " << got;
    EXPECT_TRUE(worker_.proc.running()) << worker_.proc.log();
}

// The same file name elsewhere stands for the coordinator's path (the model may live
// elsewhere on the worker's host); the handshake then checks the model's identity.
TEST_F(HostileCoordinator, AJobForTheSameFileNameElsewhereIsServed) {
    ASSERT_TRUE(start_worker()) << worker_.proc.log();
    auto link = connect();
    launcher::WorkerJob j = honest_job();
    j.model_path = "/somewhere/else/model.gguf";
    send_assign(*link, pipeline::encode(j));
    EXPECT_EQ(drive(*link), "ready") << worker_.proc.log();
}

TEST_F(HostileCoordinator, AJobWithAbsurdSizesIsRefused) {
    ASSERT_TRUE(start_worker()) << worker_.proc.log();
    for (int field = 0; field < 3; ++field) {
        auto link = connect();
        launcher::WorkerJob j = honest_job();
        if (field == 0) j.threads = 100000;
        if (field == 1) j.n_ctx = 1 << 30;
        if (field == 2) j.n_seq = 1 << 20;
        send_assign(*link, pipeline::encode(j));
        std::string got = drive(*link);
        if (got == "ready") got = drive(*link, 10s);
        EXPECT_NE(got.find("refused: "), std::string::npos) << "field " << field << ": " << got;
        EXPECT_NE(got.find("out of bounds"), std::string::npos) << "field " << field << ": " << got;
        ASSERT_TRUE(worker_.proc.running()) << worker_.proc.log();
    }
}

TEST_F(HostileCoordinator, AWorkerWithoutModelsRefusesToStart) {
    const auto r = pipelm::testing::run_bounded(
        pipelm::testing::pipelm_argv({"worker", "--listen", "127.0.0.1:0", "--token-file", token_}), path("w.log"),
        pipelm::testing::Ms(10000), so_);
    ASSERT_FALSE(r.timed_out) << "the worker started without -m:\n" << r.output;
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("pass -m FILE.gguf"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace pipelm::transport::testing
