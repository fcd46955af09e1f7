// TCP bootstrap: a coordinator and worker threads over 127.0.0.1 wire a pipeline.
#include "transport/tcp_bootstrap.h"

#include <gtest/gtest.h>

#include <exception>
#include <thread>

#include "runtime/base/error.h"
#include "tests/transport/tcp_test_util.h"

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;

Message text(uint32_t tag, std::string s) {
    Message m;
    m.tag = tag;
    m.control = std::move(s);
    return m;
}

std::string job_for(int stage) { return "job-for-stage-" + std::to_string(stage); }

// Workers 1..n on their own threads; each checks its job, forwards one message along the
// pipeline (appending its stage) and returns.
class Workers {
public:
    explicit Workers(int n) {
        for (int i = 0; i < n; ++i) listeners_.push_back(TcpListener::bind("127.0.0.1:0", kToken));
    }
    std::vector<std::string> addresses() const {
        std::vector<std::string> out;
        for (const auto& l : listeners_) out.push_back(l->address());
        return out;
    }
    void start() {
        errors_.assign(listeners_.size(), nullptr);
        for (size_t i = 0; i < listeners_.size(); ++i) threads_.emplace_back([this, i] { run(i); });
    }
    void join() {
        for (auto& t : threads_) t.join();
        threads_.clear();
        for (auto& e : errors_)
            if (e) std::rethrow_exception(e);
    }

private:
    void run(size_t i) {
        try {
            WorkerSession ws = tcp_worker_accept(*listeners_[i], 10s);
            const int stage = static_cast<int>(i) + 1;
            const int n_stages = static_cast<int>(listeners_.size()) + 1;
            EXPECT_EQ(ws.job.stage, stage);
            EXPECT_EQ(ws.job.n_stages, n_stages);
            EXPECT_EQ(ws.job.job, job_for(stage));
            ASSERT_TRUE(ws.links.prev && ws.control);
            const bool last = stage == n_stages - 1;
            EXPECT_EQ(bool(ws.links.next), !last);
            EXPECT_EQ(bool(ws.links.ring), last);
            if (stage == 1) {
                EXPECT_EQ(ws.links.prev, ws.control);
            }
            if (last) {
                EXPECT_EQ(ws.links.ring, ws.control);
            }
            Message m = ws.links.prev->recv(10s);
            m.control += "," + std::to_string(stage);
            (last ? ws.links.ring : ws.links.next)->send(std::move(m));
            // Stay until the coordinator says the job is over (keeps links up while others forward).
            Message end = ws.control->recv(10s);
            EXPECT_EQ(end.kind, MsgKind::kShutdown);
        } catch (...) {
            errors_[i] = std::current_exception();
        }
    }

    std::vector<std::unique_ptr<TcpListener>> listeners_;
    std::vector<std::thread> threads_;
    std::vector<std::exception_ptr> errors_;
};

void run_job(Workers& workers, int n_workers) {
    workers.start();
    CoordinatorSession cs;
    try {
        cs = tcp_coordinator_connect(workers.addresses(), kToken, 10s, job_for);
    } catch (...) {
        workers.join();
        throw;
    }
    ASSERT_EQ(cs.workers.size(), size_t(n_workers));
    EXPECT_FALSE(cs.links.prev);
    EXPECT_EQ(cs.links.next, cs.workers.front());
    EXPECT_EQ(cs.links.ring, cs.workers.back());
    EXPECT_EQ(cs.links.next->peer_name().rfind("stage 1 (tcp 127.0.0.1:", 0), 0u) << cs.links.next->peer_name();
    cs.links.next->send(text(42, "0"));
    Message back = cs.links.ring->recv(10s);
    EXPECT_EQ(back.tag, 42u);
    std::string expected = "0";
    for (int s = 1; s <= n_workers; ++s) expected += "," + std::to_string(s);
    EXPECT_EQ(back.control, expected);
    for (auto& w : cs.workers) {
        Message bye = text(0, "done");
        bye.kind = MsgKind::kShutdown;
        w->send(std::move(bye));
        w->flush();
    }
    workers.join();
}

TEST(TcpBootstrap, CoordinatorAndThreeWorkers) {
    Workers workers(3);
    run_job(workers, 3);
}

TEST(TcpBootstrap, OneWorkerSharesNextAndRing) {
    Workers workers(1);
    run_job(workers, 1);
}

TEST(TcpBootstrap, ListenersServeASecondJob) {
    Workers workers(2);
    run_job(workers, 2);
    run_job(workers, 2);
}

// Workers poll tcp_worker_accept with a short timeout (as `pipelm worker` does); once the
// coordinator is in, a slow start of another worker must not time the first one out.
TEST(TcpBootstrap, ShortAcceptTimeoutOnlyBoundsTheWaitForACoordinator) {
    auto l1 = TcpListener::bind("127.0.0.1:0", kToken);
    auto l2 = TcpListener::bind("127.0.0.1:0", kToken);
    auto serve = [](TcpListener& l, std::chrono::milliseconds start_delay) {
        std::this_thread::sleep_for(start_delay);
        for (;;) {
            try {
                WorkerSession ws = tcp_worker_accept(l, 300ms);
                Message m = ws.links.prev->recv(10s);
                (ws.links.next ? ws.links.next : ws.links.ring)->send(std::move(m));
                ws.control->recv(10s);  // the coordinator's shutdown
                return;
            } catch (const Error& e) {
                if (e.code() == ErrorCode::kTimeout) continue;
                ADD_FAILURE() << e.what();
                return;
            }
        }
    };
    std::thread w1([&] { serve(*l1, 0ms); });
    std::thread w2([&] { serve(*l2, 1200ms); });  // its connection waits in the backlog meanwhile
    try {
        CoordinatorSession cs = tcp_coordinator_connect({l1->address(), l2->address()}, kToken, 10s, job_for);
        cs.links.next->send(text(1, "around"));
        EXPECT_EQ(cs.links.ring->recv(10s).control, "around");
        for (auto& w : cs.workers) {
            Message bye = text(0, "done");
            bye.kind = MsgKind::kShutdown;
            w->send(std::move(bye));
            w->flush();
        }
    } catch (const Error& e) {
        ADD_FAILURE() << e.what();
    }
    w1.join();
    w2.join();
}

TEST(TcpBootstrap, WrongTokenFailsClearlyAndWorkersKeepWaiting) {
    auto listener = TcpListener::bind("127.0.0.1:0", kToken);
    std::exception_ptr worker_error;
    std::thread worker([&] {
        try {
            tcp_worker_accept(*listener, 1500ms);
        } catch (...) {
            worker_error = std::current_exception();
        }
    });
    try {
        tcp_coordinator_connect({listener->address()}, "not-the-token", 5s, job_for);
        ADD_FAILURE() << "coordinator connected with a wrong token";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("refused the token (check --token-file)"), std::string::npos) << e.what();
    }
    worker.join();
    ASSERT_TRUE(worker_error);
    try {
        std::rethrow_exception(worker_error);
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
    }
}

TEST(TcpBootstrap, UnreachableWorkerAbortsTheOthers) {
    auto good = TcpListener::bind("127.0.0.1:0", kToken);
    uint16_t dead_port = 0;
    {
        auto l = TcpListener::bind("127.0.0.1:0", kToken);
        dead_port = l->port();
    }
    std::exception_ptr worker_error;
    std::thread worker([&] {
        try {
            tcp_worker_accept(*good, 5s);
        } catch (...) {
            worker_error = std::current_exception();
        }
    });
    try {
        tcp_coordinator_connect({good->address(), "127.0.0.1:" + std::to_string(dead_port)}, kToken, 1s, job_for);
        ADD_FAILURE() << "coordinator connected to a dead worker";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
    }
    worker.join();
    ASSERT_TRUE(worker_error);
    try {
        std::rethrow_exception(worker_error);
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kPeerLost) << e.what();
        EXPECT_NE(std::string(e.what()).find("pipeline set-up failed"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace pipelm::transport::testing
