// MPI and TCP parts of the session wiring (kept apart so that session.cc stays transport-free).
#pragma once
#include <string>

namespace pipelm::launcher::net {

// True when this process was started by mpirun/mpiexec with more than one rank.
bool launched_by_mpirun();

}  // namespace pipelm::launcher::net
