// MPI and TCP wiring of a session, and the TCP worker loop.
#include <cstdlib>

#include "launcher/session.h"
#include "launcher/session_net.h"
#include "runtime/base/log.h"

namespace pipelm::launcher {

namespace net {
bool launched_by_mpirun() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
        const char* s = std::getenv(v);
        if (s && std::atoi(s) > 1) return true;
    }
    return false;
}
}  // namespace net

void Session::start_mpi(const SessionOptions&) {
    PIPELM_THROW(ErrorCode::kUnsupported, "MPI mode is not wired yet");
}

void Session::start_tcp(const SessionOptions&) {
    PIPELM_THROW(ErrorCode::kUnsupported, "TCP mode is not wired yet");
}

int run_worker(const std::string&, const std::string&, const std::string&, int, bool) {
    PIPELM_THROW(ErrorCode::kUnsupported, "worker is not wired yet");
}

}  // namespace pipelm::launcher
