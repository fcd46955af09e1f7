// MPI and TCP parts of the session wiring (kept apart so that session.cc stays transport-free).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"

namespace pipelm::launcher::net {

// True when this process was started by mpirun/mpiexec with more than one rank.
bool launched_by_mpirun();
// Under mpirun (launched_by_mpirun's variables): the world size and this rank; {0, 0} otherwise.
std::pair<int, int> mpi_world_from_env();
// Ranks mpirun started on this host (they share its cores); 1 outside mpirun.
int local_ranks();

// Prints the error that ends this process (launcher/main.cc). Under mpirun every rank runs the
// same command line, so most errors happen on every rank alike; such an error is printed once,
// by rank 0, and one rank's own error by that rank with its "[rank N] " prefix:
// - before the ranks meet (flags, option checks): an invalid argument comes from the command
//   line and is printed by rank 0 only; anything else by each rank, prefixed;
// - while they set up their stages (opening the model, the plan, loading): the ranks compare
//   their errors (Session::start_mpi) and print them there, so this prints nothing more;
// - afterwards: each rank its own, prefixed.
void report_error(const std::string& message, ErrorCode code);
// This rank alone does the command's work (plan under mpirun: rank 0, the others exit at once):
// its errors are the job's, printed without a rank prefix.
void report_for_the_job();

struct WorkerOptions {
    std::string listen;               // HOST:PORT
    std::string token_file;
    std::vector<std::string> models;  // -m: the only files this worker opens
    int threads = 0;                  // 0: the coordinator's --threads, else all cores
    bool once = false;
    double peer_timeout_s = 10;       // --peer-timeout: silence after which a peer is lost
};

// Runs a TCP worker: serves jobs from coordinators until killed (or one job with `once`). A
// job names a model path; the worker serves it only if it is one of `models` (same path, or
// the only one with the same file name) and checks every field of the job before use.
int run_worker(const WorkerOptions& opt);

// "a.gguf,b.gguf" -> {"a.gguf", "b.gguf"}.
std::vector<std::string> split_models(const std::string& list);

}  // namespace pipelm::launcher::net
