// The CUDA backend of the device-neutral ops (backend.h), over kernels/cuda/. It is built as the
// run-time module libpipelm_cuda.so (with CUDA, cuBLAS and the kernels inside), which
// make_cuda_backend() loads on first use: a process that never creates a CUDA stage maps none of
// the CUDA libraries (the pipelm executable does not link them).
//
// Where the module is looked for, first found wins: $PIPELM_CUDA_MODULE (a file path), then
// libpipelm_cuda.so beside the executable, then ../lib/pipelm/ from it, then the build tree this
// pipelm was built in.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/model/backend.h"

namespace pipelm::model {

// Bumped whenever backend.h, stage.h or the arguments below change: the loader refuses a module
// built from other headers.
inline constexpr int kCudaModuleAbi = 1;

struct CudaBackendArgs {
    int abi = kCudaModuleAbi;
    int device = 0;     // CUDA ordinal
    int stage = 0;      // for messages
    int log_level = 1;  // the process's pipelm::LogLevel
};

// Exported by the module (extern "C", name kCudaFactorySymbol): a new backend, or throws
// pipelm::Error (kCuda: no such device / driver too old; kUnsupported: the build's architectures
// do not cover the device).
using CudaBackendFactory = Backend* (*)(const CudaBackendArgs* args);
inline constexpr const char* kCudaFactorySymbol = "pipelm_cuda_make_backend";

// Loads the module (once per process) and creates a backend on cuda:<device>. Throws
// Error{kUnsupported} naming where it looked when this pipelm has no CUDA module.
std::unique_ptr<Backend> make_cuda_backend(int device, int stage);

// Path of the loaded module, or "" when it was never loaded (for --version and tests).
std::string cuda_module_path();

}  // namespace pipelm::model
