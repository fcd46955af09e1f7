// Helpers for the hostile-peer tests: memory of this process and of a child, a fake listener
// that records what a connecting client sends, and reading of whole byte strings with a bound.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace pipelm::transport::testing {

// Resident set size of this process, in bytes (/proc/self/statm).
inline size_t rss_bytes() {
    std::ifstream f("/proc/self/statm");
    size_t pages = 0, resident = 0;
    f >> pages >> resident;
    return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

// How much the peak resident set of this process grew while `fn` ran, in bytes (the peak is
// reset first through /proc/self/clear_refs); -1 when the kernel does not let us reset it.
template <typename F>
int64_t peak_rss_growth(F&& fn);

// A "Vm...:" field of /proc/<pid>/status in KiB (e.g. "VmHWM", the peak resident set); -1 if
// the process is gone.
inline int64_t proc_status_kib(pid_t pid, const std::string& field) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(field + ":", 0) == 0) {
            std::istringstream ss(line.substr(field.size() + 1));
            int64_t kib = -1;
            ss >> kib;
            return kib;
        }
    return -1;
}

template <typename F>
int64_t peak_rss_growth(F&& fn) {
    {
        std::ofstream reset("/proc/self/clear_refs");
        reset << "5";
        reset.close();
        if (!reset) return -1;
    }
    const int64_t base = proc_status_kib(::getpid(), "VmHWM");
    fn();
    return (proc_status_kib(::getpid(), "VmHWM") - base) * 1024;
}

// A plain listening socket on 127.0.0.1 that plays a fake worker: accepts one connection and
// hands back its descriptor (POSIX calls, so that nothing of pipelm's greeting is involved).
class FakeListener {
public:
    FakeListener() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd_, 8) == 0 &&
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
            port_ = ntohs(a.sin_port);
    }
    ~FakeListener() {
        if (conn_ >= 0) ::close(conn_);
        if (fd_ >= 0) ::close(fd_);
    }
    FakeListener(const FakeListener&) = delete;
    FakeListener& operator=(const FakeListener&) = delete;

    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

    // Waits up to `timeout` for a connection; false if none came.
    bool accept(std::chrono::milliseconds timeout) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
        conn_ = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        return conn_ >= 0;
    }

    // Everything the peer sends until `want` bytes came, it closes, or `timeout` passes.
    std::string read_up_to(size_t want, std::chrono::milliseconds timeout) {
        std::string got;
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (got.size() < want) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{conn_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
            char buf[4096];
            const ssize_t n = ::recv(conn_, buf, std::min(sizeof buf, want - got.size()), 0);
            if (n <= 0) break;
            got.append(buf, static_cast<size_t>(n));
        }
        return got;
    }

    void write(const std::vector<uint8_t>& bytes) {
        size_t off = 0;
        while (off < bytes.size()) {
            const ssize_t n = ::send(conn_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
            if (n <= 0) return;
            off += static_cast<size_t>(n);
        }
    }

private:
    int fd_ = -1;
    int conn_ = -1;
    uint16_t port_ = 0;
};

}  // namespace pipelm::transport::testing
