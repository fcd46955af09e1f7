// Small timing helpers shared by the links: saturating deadlines, human-readable durations and
// the MPI link's polling pause (yield while data moves, sleep while idle).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <thread>

namespace pipelm::transport::detail {

using Clock = std::chrono::steady_clock;

// now + timeout, saturated at ~10 years so "wait forever" (milliseconds::max()) cannot overflow.
inline Clock::time_point deadline_after(std::chrono::milliseconds timeout) {
    constexpr std::chrono::milliseconds kForever{int64_t(10) * 365 * 24 * 3600 * 1000};
    if (timeout.count() < 0) timeout = std::chrono::milliseconds(0);
    return Clock::now() + std::min(timeout, kForever);
}

inline int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// "1 s", "0.25 s", "10 s".
inline std::string format_seconds(std::chrono::milliseconds d) {
    std::ostringstream os;
    if (d.count() % 1000 == 0)
        os << d.count() / 1000 << " s";
    else
        os << static_cast<double>(d.count()) / 1000.0 << " s";
    return os.str();
}

// Pause between two polls of MPI requests. MPI (OpenMPI's shared-memory and TCP paths) only
// moves data inside our MPI calls, so while a transfer is moving (progressed() less than 2 ms
// ago) the poller just yields the CPU; otherwise it sleeps 50 us doubling to 200 us, so an idle
// wait costs next to nothing when ranks share cores.
class PollBackoff {
public:
    void progressed() {
        hot_until_ = Clock::now() + std::chrono::milliseconds(2);
        us_ = 50;
    }
    void wait() {
        if (Clock::now() < hot_until_) {
            std::this_thread::yield();
            return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(us_));
        us_ = std::min(us_ * 2, 200);
    }

private:
    Clock::time_point hot_until_{};
    int us_ = 50;
};

}  // namespace pipelm::transport::detail
