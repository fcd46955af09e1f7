// TCP bootstrap for `pipelm run --workers` (coordinator = stage 0) and `pipelm worker`.
// The job description is opaque bytes from the runtime; this file only wires links.
//
// Wiring for S = n + 1 stages, workers W1..Wn (stage i runs on workers[i-1]):
//   * the coordinator opens one authenticated connection to every worker ("control");
//   * W1's control connection is also its `prev` (stage 0's `next`);
//   * Wi (1 <= i < n) connects to Wi+1, which accepts it as its `prev`;
//   * Wn's `ring` is its control connection; stage 0's `ring` is its connection to Wn
//     (with one worker, stage 0's next == ring and W1's prev == ring == control).
//
// Messages (control bytes, little-endian, bounded reader, tags 0x504C42xx "PLB"):
//   Assign  coordinator -> Wi : session u64, stage i32, n_stages i32, timeout_ms u32,
//                               next worker address str ("" for the last), job str
//   Hello   Wi -> Wi+1        : session u64, stage i32 (Wi+1 drops connections of other jobs)
//   Ready   Wi -> coordinator : session u64, stage i32 (all of Wi's links are up)
//   Start   coordinator -> Wi : session u64 (every worker is ready; the pipeline may run)
// A failure on either side aborts every link opened so far with the reason, so the other side
// fails with kPeerLost naming the stage and cause, and workers go back to listening.
//
// Threading: blocking calls on the caller's thread; the links have their own I/O threads.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "transport/link.h"
#include "transport/tcp_link.h"

namespace pipelm::transport {

struct TcpJob {
    int stage = 0;
    int n_stages = 0;
    std::string job;  // opaque runtime bytes
};

struct CoordinatorSession {
    StageLinks links;                             // stage 0's: next and ring (prev is null)
    std::vector<std::shared_ptr<Link>> workers;   // workers[i]: control connection to stage i+1
};

// Connects to every worker (workers[i] runs stage i+1), sends each its job and the address of
// its successor, waits until all are wired and releases them. `connect_timeout` bounds the
// connects (all together) and then the wiring. Keep `workers` alive for the whole job: it is
// how an abort or shutdown reaches the middle stages.
CoordinatorSession tcp_coordinator_connect(const std::vector<std::string>& workers, const std::string& token,
                                           std::chrono::milliseconds connect_timeout,
                                           const std::function<std::string(int stage)>& job_for_stage,
                                           const TcpOptions& options = {});

// The wiring half of tcp_coordinator_connect, for workers already connected and authenticated:
// connected[i] is the control connection to workers[i] (stage i+1). On failure every link is
// aborted with the reason and the error rethrown. Used to re-form a pipeline after a loss.
CoordinatorSession tcp_coordinator_wire(std::vector<std::shared_ptr<Link>> connected,
                                        const std::vector<std::string>& workers,
                                        std::chrono::milliseconds timeout,
                                        const std::function<std::string(int stage)>& job_for_stage);

// True when nothing accepts a TCP connection at `host_port` within `timeout`: refused (a worker
// process that died: its kernel closed the port), unreachable, or no answer. A live worker's
// listener is bound for its whole life, busy or not, so it is false for one. One attempt, no
// retry, no bytes sent (the connection is closed at once; the worker logs a dropped greeting).
bool tcp_nobody_listens(const std::string& host_port, std::chrono::milliseconds timeout);

struct WorkerSession {
    TcpJob job;
    StageLinks links;
    std::shared_ptr<Link> control;  // connection to the coordinator (also prev for stage 1, ring for the last)
};

// Called on the worker with the job once its Assign arrived, before the worker connects to its
// successor: checks the job (throws to refuse it; the coordinator sees the reason) and returns
// the limits this worker's links enforce on what they receive for the rest of the job (the
// largest message its plan allows). Until then the links enforce the listener's options()
// (receive_limits, else limits).
using JobLimits = std::function<LinkLimits(const TcpJob& job)>;

// Waits up to `timeout` for a coordinator on `listener` (Error{kTimeout} if none came: call it
// again), then wires this worker's links: the Assign is awaited up to max(timeout, 10 min)
// (the coordinator may still be connecting to other workers; its heartbeats or EOF say whether
// it lives), the rest is bounded by the coordinator's timeout. `limits_for_job` (if set) runs
// on the Assign and its limits are in force on every link before this worker reports Ready.
// Any failure after a coordinator came aborts the links opened so far (the coordinator sees
// the reason) and is rethrown; a timeout in that phase becomes Error{kPeerLost}. `listener`
// stays usable for the next job.
WorkerSession tcp_worker_accept(TcpListener& listener, std::chrono::milliseconds timeout,
                                const JobLimits& limits_for_job = {});

}  // namespace pipelm::transport
