// MPI links (OpenMPI or any MPI-3 library with MPI_THREAD_MULTIPLE), built when
// PIPELM_WITH_MPI is 1. Without MPI the same API exists: MpiEnv's constructor throws
// Error{kUnsupported}, launched_by_mpirun() still reads the environment.
//
// Wire format: a message is one MPI message "frame header (24 bytes, see frame.h) + control"
// followed by its payload in chunks of at most 4 MiB, all with tag = the link's channel on a
// communicator duplicated from MPI_COMM_WORLD at start-up (MPI's non-overtaking rule keeps
// header and chunks in order). Heartbeat frames flow when a sender is idle; destroying a link
// sends a close frame, abort() an abort frame with the reason.
//
// Threading: each link has one sender thread that owns the outbox (bounded, send() returns once
// queued; it blocks while `max_queued` messages wait) and drives MPI_Isend requests by polling.
// recv() runs on the caller's thread: MPI_Improbe, then MPI_Imrecv/MPI_Irecv of all chunks,
// polled until a message, the timeout, a local abort, or `peer_timeout` of silence (kPeerLost).
// Polling never blocks inside MPI (blocking calls spin a core in OpenMPI, and ranks may share
// two): it yields the CPU for 2 ms after each completed piece (MPI moves data only inside our
// calls) and otherwise sleeps 50 us doubling to 200 us. Both sides may send at once without
// deadlock: nothing blocks in MPI.
//
// A peer that dies: mpirun normally ends the job; until then recv fails within peer_timeout.
// Lifetime: every link must be destroyed before its MpiEnv (MPI_Finalize).
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "transport/link.h"

#if PIPELM_WITH_MPI
#include <mpi.h>
#endif

namespace pipelm::transport {

struct MpiLinkOptions {
    std::chrono::milliseconds peer_timeout{10000};    // silence that means the peer is gone
    std::chrono::milliseconds heartbeat_interval{0};  // 0: peer_timeout / 4
    std::chrono::milliseconds close_linger{2000};     // destructor: bound on draining the outbox
    size_t max_queued = 64;
    LinkLimits limits;
};

class MpiEnv {
public:
    // MPI_Init_thread(MPI_THREAD_MULTIPLE) (or adopts an MPI already initialized), then duplicates
    // MPI_COMM_WORLD for pipelm's links. Error{kMpi} if the library cannot provide
    // MPI_THREAD_MULTIPLE, Error{kUnsupported} if pipelm was built without MPI.
    MpiEnv(int* argc, char*** argv);
    MpiEnv() : MpiEnv(nullptr, nullptr) {}
    ~MpiEnv();  // frees the communicator; MPI_Finalize if we initialized MPI
    MpiEnv(const MpiEnv&) = delete;
    MpiEnv& operator=(const MpiEnv&) = delete;

    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }

    // True when this process was started by mpirun/mpiexec/srun (OMPI_COMM_WORLD_SIZE,
    // PMI_SIZE, PMIX_RANK, ...): the launcher then creates an MpiEnv.
    static bool launched_by_mpirun();

    // Every rank's `mine`, in rank order (collective: every rank must call it, once per use). It
    // polls non-blocking collectives with short sleeps, as the links do, so that a rank waiting
    // for a slower one (loading its weights) does not spin a core.
    std::vector<std::string> allgather(const std::string& mine) const;

    // MPI_Abort on MPI_COMM_WORLD: ends every rank of the job with `code`. For launcher/main.cc.
    [[noreturn]] void abort_job(int code) const noexcept;

#if PIPELM_WITH_MPI
    MPI_Comm comm() const noexcept { return comm_; }
#endif

private:
    int rank_ = 0;
    int size_ = 1;
#if PIPELM_WITH_MPI
    bool finalize_ = false;  // this object initialized MPI, so it finalizes it
    MPI_Comm comm_ = MPI_COMM_NULL;
#endif
};

// Links of stage = rank in a pipeline of size() stages: prev/next on channel 1 to rank -/+ 1,
// ring on channel 2 between the last rank and rank 0 (a separate link also for 2 ranks).
StageLinks make_mpi_links(MpiEnv& env, const MpiLinkOptions& options = {});

// One link to `peer_rank` on `channel` (the MPI tag, 3..32767; 1 and 2 are make_mpi_links').
// Both ranks must open the link with the same channel.
std::shared_ptr<Link> make_mpi_link(MpiEnv& env, int peer_rank, int channel, const MpiLinkOptions& options = {});

}  // namespace pipelm::transport
