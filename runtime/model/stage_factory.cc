// make_stage: the one place that maps a device name to a stage implementation.
#include <cstdlib>

#include "runtime/base/error.h"
#include "runtime/model/glm4_stage.h"
#include "runtime/model/stage.h"
#if PIPELM_WITH_CUDA
#include "runtime/model/glm4_stage_cuda.h"
#endif

namespace pipelm::model {

std::unique_ptr<Stage> make_stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg,
                                  const StageSpec& spec, const StageOptions& opt, ThreadPool& pool) {
    if (opt.device.empty() || opt.device == "cpu")
        return std::make_unique<Glm4Stage>(std::move(file), cfg, spec, opt, pool);
    if (opt.device.rfind("cuda:", 0) == 0) {
        char* end = nullptr;
        const long ordinal = std::strtol(opt.device.c_str() + 5, &end, 10);
        if (*end != '\0' || ordinal < 0)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "stage ", spec.index, ": device '", opt.device,
                         "' is not cpu or cuda:N");
#if PIPELM_WITH_CUDA
        return std::make_unique<CudaGlm4Stage>(std::move(file), cfg, spec, opt, static_cast<int>(ordinal));
#else
        PIPELM_THROW(ErrorCode::kUnsupported, "stage ", spec.index, ": device '", opt.device,
                     "' needs the CUDA backend, but this pipelm was built without CUDA "
                     "(install the CUDA Toolkit and rebuild, or use --devices cpu)");
#endif
    }
    PIPELM_THROW(ErrorCode::kInvalidArgument, "stage ", spec.index, ": unknown device '", opt.device,
                 "' (use cpu or cuda:N)");
}

}  // namespace pipelm::model
