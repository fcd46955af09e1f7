// One exception type for all of pipelm; messages name the file/flag/rank/peer and the fix.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace pipelm {

enum class ErrorCode {
    kInvalidArgument,
    kUnsupported,
    kOutOfMemory,
    kFormat,
    kCuda,
    kCublas,
    kNccl,
    kMpi,
    kIo,
    kProtocol,
    kTimeout,
    kPeerLost,
    kCancelled,
    kNumerics,
    kInternal,
    // A device named in --devices is not there: no GPU, no driver, no such ordinal, or a pipelm
    // built without CUDA (last, so that the CUDA module's codes keep their values).
    kNoDevice,
};

const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ErrorCode code() const noexcept { return code_; }

private:
    ErrorCode code_;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}
}  // namespace detail

}  // namespace pipelm

// Throws pipelm::Error with the concatenated message (no file:line: messages are for users).
#define PIPELM_THROW(code, ...) throw ::pipelm::Error((code), ::pipelm::detail::concat(__VA_ARGS__))

// Checks an internal or argument invariant.
#define PIPELM_CHECK(cond, ...)                                                           \
    do {                                                                                  \
        if (!(cond))                                                                      \
            throw ::pipelm::Error(::pipelm::ErrorCode::kInvalidArgument,                   \
                                  ::pipelm::detail::concat(__VA_ARGS__));                 \
    } while (0)
