// The CPU backend of the device-neutral ops (backend.h), over kernels/.
#pragma once
#include <memory>
#include <string>

#include "runtime/base/thread_pool.h"
#include "runtime/model/backend.h"

namespace pipelm::model {

// act_quant: "none" or "" (f32 activations, exact) or "q8" (kernels/matmul.h ActQuant::kQ8);
// anything else throws Error{kInvalidArgument} naming --act-quant.
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, const std::string& act_quant);

}  // namespace pipelm::model
