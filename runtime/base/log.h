// Minimal leveled logging to stderr; thread-safe line by line.
#pragma once
#include <string>

#include "runtime/base/error.h"

namespace pipelm {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kQuiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
// Prefix printed before every line (e.g. "[rank 2] "), set once by the launcher.
void set_log_prefix(const std::string& prefix);
void log_line(LogLevel level, const std::string& msg);

}  // namespace pipelm

#define PIPELM_LOG(level, ...)                                                             \
    do {                                                                                   \
        if ((level) >= ::pipelm::log_level())                                              \
            ::pipelm::log_line((level), ::pipelm::detail::concat(__VA_ARGS__));            \
    } while (0)
#define PIPELM_INFO(...) PIPELM_LOG(::pipelm::LogLevel::kInfo, __VA_ARGS__)
#define PIPELM_WARN(...) PIPELM_LOG(::pipelm::LogLevel::kWarn, __VA_ARGS__)
#define PIPELM_DEBUG(...) PIPELM_LOG(::pipelm::LogLevel::kDebug, __VA_ARGS__)
