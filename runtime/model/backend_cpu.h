// The CPU backend of the device-neutral ops (backend.h), over kernels/.
#pragma once
#include <memory>
#include <string>

#include "runtime/base/thread_pool.h"
#include "runtime/model/backend.h"

namespace pipelm::model {

// act_quant: "auto" or "" (the default: int8 activations, kernels/matmul.h ActQuant::kQ8, for
// the weights with an integer kernel, i.e. every quantized type; exact f32 activations for
// F32/F16/BF16 weights), "q8" (the same), or "none" (f32 activations for every weight, exact);
// anything else throws Error{kInvalidArgument} naming --act-quant.
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, const std::string& act_quant);

}  // namespace pipelm::model
