// Fuzz target: the control bytes of a sequence start message (pipeline::SeqStart) and of a
// sequence resume after a recovery (pipeline::SeqResume: a SeqStart and a draw count), as a
// pipeline stage decodes them from its coordinator (see fuzz_cereal_msg.h). Every input is
// decoded as both: the resume is the start's bytes plus eight, so one corpus serves the two.
#include "tests/fuzz/fuzz_cereal_msg.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    pipelm::fuzzing::fuzz_cereal_message<pipelm::pipeline::SeqStart>(data, size, "sequence start");
    return pipelm::fuzzing::fuzz_cereal_message<pipelm::pipeline::SeqResume>(data, size, "sequence resume");
}
