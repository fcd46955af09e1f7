// make_stage: the one place that maps a device name to a backend, and the loader of the CUDA
// backend module (backend_cuda.h).
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/log.h"
#include "runtime/model/backend_cpu.h"
#include "runtime/model/backend_cuda.h"
#include "runtime/model/glm4_stage.h"
#include "runtime/model/stage.h"

#ifndef PIPELM_CUDA_MODULE_BUILD_PATH
#define PIPELM_CUDA_MODULE_BUILD_PATH ""
#endif

namespace pipelm::model {
namespace {

constexpr const char* kModuleName = "libpipelm_cuda.so";

std::string exe_dir() {
    char buf[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0) return "";
    std::string p(buf, static_cast<size_t>(n));
    const size_t slash = p.rfind('/');
    return slash == std::string::npos ? "" : p.substr(0, slash);
}

struct Module {
    std::once_flag once;
    CudaBackendFactory factory = nullptr;
    std::string path;
    std::string error;  // why it could not be loaded
    // kNoDevice when CUDA is not there (no module in this build, no CUDA runtime to load it
    // with), kUnsupported when the module found is not this pipelm's.
    ErrorCode code = ErrorCode::kNoDevice;
};

Module& module() {
    static Module m;
    return m;
}

void load_module(Module& m) {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("PIPELM_CUDA_MODULE"); env && *env) candidates.push_back(env);
    const std::string dir = exe_dir();
    if (!dir.empty()) {
        candidates.push_back(dir + "/" + kModuleName);
        candidates.push_back(dir + "/../lib/pipelm/" + kModuleName);
    }
    if (*PIPELM_CUDA_MODULE_BUILD_PATH) candidates.push_back(PIPELM_CUDA_MODULE_BUILD_PATH);
    std::string tried;
    for (const std::string& c : candidates) {
        tried += (tried.empty() ? "" : ", ") + c;
        if (access(c.c_str(), R_OK) != 0) continue;
        void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char* why = dlerror();
            m.error = c + " cannot be loaded: " + (why ? why : "unknown dlopen error") +
                      " (are the CUDA 13 runtime and cuBLAS libraries installed and on the library path?)";
            return;
        }
        auto f = reinterpret_cast<CudaBackendFactory>(dlsym(h, kCudaFactorySymbol));
        if (!f) {
            m.error = c + " is not a pipelm CUDA module (no " + kCudaFactorySymbol + "); rebuild pipelm";
            m.code = ErrorCode::kUnsupported;
            return;
        }
        m.factory = f;
        m.path = c;
        return;
    }
    m.error = std::string("this pipelm has no CUDA backend module (") + kModuleName + " not found; looked at " +
              (tried.empty() ? "nothing" : tried) +
              "): build with the CUDA Toolkit installed (nvcc) or set PIPELM_CUDA_MODULE, or use --devices cpu";
}

int parse_cuda_ordinal(const std::string& device, int stage) {
    char* end = nullptr;
    const long ordinal = std::strtol(device.c_str() + 5, &end, 10);
    if (device.size() == 5 || *end != '\0' || ordinal < 0 || ordinal > 1023)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "stage ", stage, ": device '", device, "' is not cpu or cuda:N");
    return static_cast<int>(ordinal);
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device, int stage) {
    Module& m = module();
    std::call_once(m.once, [&] { load_module(m); });
    if (!m.factory) PIPELM_THROW(m.code, "stage ", stage, ": device 'cuda:", device, "': ", m.error);
    CudaBackendArgs args;
    args.device = device;
    args.stage = stage;
    args.log_level = static_cast<int>(log_level());
    return std::unique_ptr<Backend>(m.factory(&args));
}

std::string cuda_module_path() { return module().path; }

std::unique_ptr<Stage> make_stage(std::shared_ptr<const gguf::GgufFile> file, const Glm4Config& cfg,
                                  const StageSpec& spec, const StageOptions& opt, ThreadPool& pool) {
    std::unique_ptr<Backend> be;
    if (opt.device.empty() || opt.device == "cpu")
        be = make_cpu_backend(pool, opt.act_quant);
    else if (opt.device.rfind("cuda:", 0) == 0)
        be = make_cuda_backend(parse_cuda_ordinal(opt.device, spec.index), spec.index);
    else
        PIPELM_THROW(ErrorCode::kInvalidArgument, "stage ", spec.index, ": unknown device '", opt.device,
                     "' (use cpu or cuda:N)");
    return std::make_unique<Glm4Stage>(std::move(file), cfg, spec, opt, std::move(be));
}

}  // namespace pipelm::model
