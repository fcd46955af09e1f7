// Fuzz target: the control bytes of the worker job (launcher::WorkerJob, launcher/session.h) as
// a TCP worker decodes them from a coordinator (launcher/session_net.cc prepare_job). Only the
// decode is reachable from a library: the field bounds that prepare_job checks next live in the
// launcher executable and are covered by tests/transport/hostile_worker_test.cc instead.
#include "launcher/session.h"
#include "tests/fuzz/fuzz_cereal_msg.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return pipelm::fuzzing::fuzz_cereal_message<pipelm::launcher::WorkerJob>(data, size, "worker job");
}
