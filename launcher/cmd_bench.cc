#include "launcher/commands.h"
#include "runtime/base/error.h"
namespace pipelm::launcher {
int cmd_bench(int, char**) { PIPELM_THROW(ErrorCode::kUnsupported, "bench: not yet"); }
int cmd_worker(int, char**) { PIPELM_THROW(ErrorCode::kUnsupported, "worker: not yet"); }
}  // namespace pipelm::launcher
