// MpiEnv: RAII for MPI_Init_thread / MPI_Finalize and pipelm's communicator.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "runtime/base/error.h"
#include "transport/mpi_link.h"

namespace pipelm::transport {

bool MpiEnv::launched_by_mpirun() {
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS"})
        if (std::getenv(var) != nullptr) return true;
    return false;
}

#if PIPELM_WITH_MPI

namespace {
std::string mpi_error_string(int rc) {
    char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, buf, &len);
    return std::string(buf, static_cast<size_t>(len));
}

const char* thread_level_name(int level) {
    switch (level) {
        case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
        case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
        case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
        case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
        default: return "an unknown thread level";
    }
}
}  // namespace

MpiEnv::MpiEnv(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    int provided = MPI_THREAD_SINGLE;
    if (!initialized) {
        const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS) PIPELM_THROW(ErrorCode::kMpi, "MPI_Init_thread failed: ", mpi_error_string(rc));
        finalize_ = true;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_MULTIPLE) {
        if (finalize_) MPI_Finalize();
        PIPELM_THROW(ErrorCode::kMpi, "the MPI library provides ", thread_level_name(provided),
                     " but pipelm's MPI links need MPI_THREAD_MULTIPLE (use an MPI built with thread support, "
                     "e.g. Debian's openmpi-bin, or run with TCP links instead)");
    }
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS) {
        if (finalize_) MPI_Finalize();
        PIPELM_THROW(ErrorCode::kMpi, "MPI_Comm_dup(MPI_COMM_WORLD) failed: ", mpi_error_string(rc));
    }
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
}

MpiEnv::~MpiEnv() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    if (finalize_) MPI_Finalize();
}

namespace {
// Waits for `req` without blocking inside MPI (see mpi_link.h): test, then sleep 50 us doubling
// to 2 ms.
void wait_polling(MPI_Request& req, const char* what) {
    auto pause = std::chrono::microseconds(50);
    for (;;) {
        int done = 0;
        const int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) PIPELM_THROW(ErrorCode::kMpi, what, " failed: ", mpi_error_string(rc));
        if (done) return;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(2000));
    }
}
}  // namespace

std::vector<std::string> MpiEnv::allgather(const std::string& mine) const {
    std::vector<int> lens(static_cast<size_t>(size_));
    const int len = static_cast<int>(mine.size());
    MPI_Request req;
    int rc = MPI_Iallgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_, &req);
    if (rc != MPI_SUCCESS) PIPELM_THROW(ErrorCode::kMpi, "MPI_Iallgather failed: ", mpi_error_string(rc));
    wait_polling(req, "MPI_Iallgather");
    std::vector<int> displs(static_cast<size_t>(size_));
    int total = 0;
    for (int r = 0; r < size_; ++r) displs[r] = total, total += lens[r];
    std::string all(static_cast<size_t>(total), '\0');
    rc = MPI_Iallgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, comm_, &req);
    if (rc != MPI_SUCCESS) PIPELM_THROW(ErrorCode::kMpi, "MPI_Iallgatherv failed: ", mpi_error_string(rc));
    wait_polling(req, "MPI_Iallgatherv");
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(lens[r])));
    return out;
}

void MpiEnv::abort_job(int code) const noexcept {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
}

#else  // !PIPELM_WITH_MPI

MpiEnv::MpiEnv(int*, char***) {
    PIPELM_THROW(ErrorCode::kUnsupported,
                 "this pipelm was built without MPI: install libopenmpi-dev and rebuild with -DPIPELM_WITH_MPI=ON, "
                 "or use TCP links (pipelm worker / --workers)");
}

MpiEnv::~MpiEnv() = default;

std::vector<std::string> MpiEnv::allgather(const std::string& mine) const { return {mine}; }

void MpiEnv::abort_job(int code) const noexcept { std::_Exit(code); }

StageLinks make_mpi_links(MpiEnv&, const MpiLinkOptions&) {
    PIPELM_THROW(ErrorCode::kUnsupported, "this pipelm was built without MPI");
}

std::shared_ptr<Link> make_mpi_link(MpiEnv&, int, int, const MpiLinkOptions&) {
    PIPELM_THROW(ErrorCode::kUnsupported, "this pipelm was built without MPI");
}

#endif

}  // namespace pipelm::transport
