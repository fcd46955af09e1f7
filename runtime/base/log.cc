#include "runtime/base/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace pipelm {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_mu;
std::string g_prefix;
}  // namespace

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }
void set_log_prefix(const std::string& prefix) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_prefix = prefix;
}

void log_line(LogLevel level, const std::string& msg) {
    static const char* names[] = {"debug", "info", "warning", "error", ""};
    std::lock_guard<std::mutex> lock(g_mu);
    if (level == LogLevel::kInfo)
        std::fprintf(stderr, "%s%s\n", g_prefix.c_str(), msg.c_str());
    else
        std::fprintf(stderr, "%s%s: %s\n", g_prefix.c_str(), names[static_cast<int>(level)], msg.c_str());
    std::fflush(stderr);
}

}  // namespace pipelm
