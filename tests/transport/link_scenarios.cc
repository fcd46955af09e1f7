// Link conformance scenarios (see link_scenarios.h).
#include "tests/transport/link_scenarios.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <thread>

#include "runtime/base/error.h"

namespace pipelm::transport::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = std::chrono::milliseconds(20000);  // bound on any step of a scenario

Message make(uint32_t tag, std::string control, std::vector<uint8_t> payload = {}, MsgKind kind = MsgKind::kData) {
    Message m;
    m.kind = kind;
    m.tag = tag;
    m.control = std::move(control);
    m.payload = std::move(payload);
    return m;
}

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Runs f, expects pipelm::Error with `code` whose message contains `needle`.
template <typename F>
void expect_error(F&& f, ErrorCode code, const std::string& needle, const char* what) {
    try {
        f();
        ADD_FAILURE() << what << ": no error thrown";
    } catch (const Error& e) {
        EXPECT_EQ(error_code_name(e.code()), std::string(error_code_name(code))) << what << ": " << e.what();
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
            << what << ": message '" << e.what() << "' lacks '" << needle << "'";
    }
}

template <typename F>
void expect_any_error(F&& f, const char* what) {
    try {
        f();
        ADD_FAILURE() << what << ": no error thrown";
    } catch (const Error& e) {
        EXPECT_TRUE(e.code() == ErrorCode::kPeerLost || e.code() == ErrorCode::kCancelled)
            << what << ": " << error_code_name(e.code()) << ": " << e.what();
    }
}

void expect_control(LinkPtr& link, const std::string& control) {
    Message m = link->recv(kWait);
    EXPECT_EQ(m.control, control);
}

const std::vector<size_t> kSizes = {0, 1, 4096, size_t(1) << 20, size_t(64) << 20};

}  // namespace

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    uint32_t x = seed * 2654435761u + 12345;
    for (size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v[i] = static_cast<uint8_t>(x);
    }
    return v;
}

Scenario ordering_scenario() {
    constexpr uint32_t kCount = 1000;
    Side a = [](LinkPtr& link) {
        for (uint32_t i = 0; i < kCount; ++i) {
            std::vector<uint8_t> p(4);
            std::memcpy(p.data(), &i, 4);
            link->send(make(i, "c" + std::to_string(i), std::move(p)));
        }
        expect_control(link, "done");
    };
    Side b = [](LinkPtr& link) {
        for (uint32_t i = 0; i < kCount; ++i) {
            Message m = link->recv(kWait);
            uint32_t v = ~0u;
            if (m.payload.size() == 4) std::memcpy(&v, m.payload.data(), 4);
            if (m.tag != i || m.control != "c" + std::to_string(i) || v != i) {
                ADD_FAILURE() << "message " << i << " arrived as tag " << m.tag << " control " << m.control;
                break;
            }
        }
        link->send(make(0, "done"));
    };
    return {"ordering", a, b};
}

Scenario sizes_scenario() {
    Side a = [](LinkPtr& link) {
        uint64_t total = 0;
        for (size_t n : kSizes) {
            const std::vector<uint8_t> p = pattern(n, static_cast<uint32_t>(n));
            link->send(make(static_cast<uint32_t>(n), "size", p));
            total += 4 + n;
            Message back = link->recv(kWait);
            EXPECT_EQ(back.payload.size(), n);
            EXPECT_TRUE(back.payload == p) << "payload of " << n << " bytes changed on the round trip";
            EXPECT_EQ(back.tag, static_cast<uint32_t>(n));
        }
        link->flush();
        EXPECT_GE(link->bytes_sent(), total);
        EXPECT_GE(link->bytes_received(), total);
    };
    Side b = [](LinkPtr& link) {
        for (size_t n : kSizes) {
            Message m = link->recv(kWait);
            EXPECT_EQ(m.payload.size(), n);
            EXPECT_EQ(m.control, "size");
            link->send(std::move(m));
        }
        link->flush();
    };
    return {"sizes", a, b};
}

namespace {
std::vector<Message> tag_messages() {
    std::string binary("\0\1\2\xff zero-and-high bytes", 24);
    std::vector<uint8_t> big = pattern(1000, 7);
    return {make(0, ""), make(1, binary), make(0xFFFFFFFFu, std::string(big.begin(), big.end()), {1, 2, 3}),
            make(7, "bye", {}, MsgKind::kShutdown)};
}
}  // namespace

Scenario tags_scenario() {
    Side a = [](LinkPtr& link) {
        for (Message& m : tag_messages()) {
            const Message sent = m;
            link->send(std::move(m));
            Message back = link->recv(kWait);
            EXPECT_EQ(int(back.kind), int(sent.kind));
            EXPECT_EQ(back.tag, sent.tag);
            EXPECT_EQ(back.control, sent.control);
            EXPECT_EQ(back.payload, sent.payload);
        }
    };
    Side b = [](LinkPtr& link) {
        for (size_t i = 0; i < tag_messages().size(); ++i) link->send(link->recv(kWait));
        link->flush();
    };
    return {"tags", a, b};
}

Scenario abort_scenario() {
    Side a = [](LinkPtr& link) {
        expect_control(link, "ready");
        std::this_thread::sleep_for(200ms);
        link->abort("stage 1 failed: boom");
        link->abort("second abort is a no-op");
        expect_error([&] { link->send(make(1, "x")); }, ErrorCode::kCancelled, "boom", "send after own abort");
        expect_error([&] { link->recv(100ms); }, ErrorCode::kCancelled, "boom", "recv after own abort");
    };
    Side b = [](LinkPtr& link) {
        link->send(make(0, "ready"));
        const auto t0 = Clock::now();
        expect_error([&] { link->recv(std::chrono::milliseconds(5000)); }, ErrorCode::kPeerLost, "boom",
                     "recv while the peer aborts");
        EXPECT_LT(ms_since(t0), 3000.0);
        expect_error([&] { link->recv(100ms); }, ErrorCode::kPeerLost, "boom", "recv after the peer aborted");
        expect_error([&] { link->send(make(1, "x")); }, ErrorCode::kPeerLost, "boom", "send after the peer aborted");
    };
    return {"abort", a, b};
}

Scenario timeout_scenario() {
    Side a = [](LinkPtr& link) {
        expect_control(link, "after-timeout");
        link->send(make(0, "ack"));
        link->flush();
    };
    Side b = [](LinkPtr& link) {
        const auto t0 = Clock::now();
        expect_error([&] { link->recv(100ms); }, ErrorCode::kTimeout, "within", "recv with nothing to receive");
        const double ms = ms_since(t0);
        EXPECT_GE(ms, 90.0);
        EXPECT_LT(ms, 2000.0);
        link->send(make(0, "after-timeout"));
        expect_control(link, "ack");
    };
    return {"timeout", a, b};
}

Scenario destroyed_scenario() {
    Side a = [](LinkPtr& link) {
        expect_control(link, "ready");
        std::this_thread::sleep_for(100ms);
        link.reset();
    };
    Side b = [](LinkPtr& link) {
        link->send(make(0, "ready"));
        const auto t0 = Clock::now();
        expect_error([&] { link->recv(std::chrono::milliseconds(5000)); }, ErrorCode::kPeerLost, "",
                     "recv while the peer's link is destroyed");
        EXPECT_LT(ms_since(t0), 3000.0);
        expect_any_error([&] { link->send(make(1, "x")); }, "send after the peer left");
    };
    return {"destroyed", a, b};
}

Scenario drain_scenario() {
    Side a = [](LinkPtr& link) {
        for (uint32_t t = 1; t <= 3; ++t) link->send(make(t, "data", pattern(1000, t)));
        link->send(make(4, "bye", {}, MsgKind::kShutdown));
        link.reset();
    };
    Side b = [](LinkPtr& link) {
        for (uint32_t t = 1; t <= 4; ++t) {
            Message m = link->recv(kWait);
            EXPECT_EQ(m.tag, t);
            EXPECT_EQ(int(m.kind), int(t == 4 ? MsgKind::kShutdown : MsgKind::kData));
        }
        expect_error([&] { link->recv(std::chrono::milliseconds(5000)); }, ErrorCode::kPeerLost, "",
                     "recv after the peer's shutdown and close");
    };
    return {"drain", a, b};
}

namespace {
void send_then_receive(LinkPtr& link, uint32_t my_seed, uint32_t peer_seed) {
    constexpr int kCount = 32;
    constexpr size_t kBytes = size_t(1) << 20;
    for (int i = 0; i < kCount; ++i) link->send(make(i, "bulk", pattern(kBytes, my_seed + i)));
    for (int i = 0; i < kCount; ++i) {
        Message m = link->recv(kWait);
        EXPECT_EQ(m.tag, uint32_t(i));
        EXPECT_TRUE(m.payload == pattern(kBytes, peer_seed + i)) << "message " << i;
    }
    link->flush();
}
}  // namespace

Scenario bidirectional_scenario() {
    Side a = [](LinkPtr& link) { send_then_receive(link, 100, 200); };
    Side b = [](LinkPtr& link) { send_then_receive(link, 200, 100); };
    return {"bidirectional", a, b};
}

std::vector<Scenario> all_scenarios() {
    return {ordering_scenario(), sizes_scenario(),     tags_scenario(),  abort_scenario(),
            timeout_scenario(),  destroyed_scenario(), drain_scenario(), bidirectional_scenario()};
}

void run_pair(const Scenario& s, std::pair<LinkPtr, LinkPtr> links) {
    auto guard = [&](const Side& side, LinkPtr& link, const char* which) {
        try {
            side(link);
        } catch (const std::exception& e) {
            ADD_FAILURE() << s.name << " side " << which << " threw: " << e.what();
        }
    };
    std::thread other([&] { guard(s.b, links.second, "B"); });
    guard(s.a, links.first, "A");
    other.join();
}

}  // namespace pipelm::transport::testing
