#include "runtime/base/error.h"

namespace pipelm {

const char* error_code_name(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::kInvalidArgument: return "invalid argument";
        case ErrorCode::kUnsupported: return "unsupported";
        case ErrorCode::kOutOfMemory: return "out of memory";
        case ErrorCode::kFormat: return "format error";
        case ErrorCode::kCuda: return "CUDA error";
        case ErrorCode::kCublas: return "cuBLAS error";
        case ErrorCode::kNccl: return "NCCL error";
        case ErrorCode::kMpi: return "MPI error";
        case ErrorCode::kIo: return "I/O error";
        case ErrorCode::kProtocol: return "protocol error";
        case ErrorCode::kTimeout: return "timeout";
        case ErrorCode::kPeerLost: return "peer lost";
        case ErrorCode::kCancelled: return "cancelled";
        case ErrorCode::kNumerics: return "non-finite values";
        case ErrorCode::kInternal: return "internal error";
        case ErrorCode::kNoDevice: return "device not available";
    }
    return "error";
}

}  // namespace pipelm
