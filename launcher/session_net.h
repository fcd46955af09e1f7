// MPI and TCP parts of the session wiring (kept apart so that session.cc stays transport-free).
#pragma once
#include <string>
#include <vector>

namespace pipelm::launcher::net {

// True when this process was started by mpirun/mpiexec with more than one rank.
bool launched_by_mpirun();

struct WorkerOptions {
    std::string listen;               // HOST:PORT
    std::string token_file;
    std::vector<std::string> models;  // -m: the only files this worker opens
    int threads = 0;                  // 0: the coordinator's --threads, else all cores
    bool once = false;
};

// Runs a TCP worker: serves jobs from coordinators until killed (or one job with `once`). A
// job names a model path; the worker serves it only if it is one of `models` (same path, or
// the only one with the same file name) and checks every field of the job before use.
int run_worker(const WorkerOptions& opt);

// "a.gguf,b.gguf" -> {"a.gguf", "b.gguf"}.
std::vector<std::string> split_models(const std::string& list);

}  // namespace pipelm::launcher::net
