// Fuzz target: the control bytes of a result message (pipeline::ResultHeader), as a pipeline stage or the
// coordinator decodes them from a peer (see fuzz_cereal_msg.h).
#include "tests/fuzz/fuzz_cereal_msg.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return pipelm::fuzzing::fuzz_cereal_message<pipelm::pipeline::ResultHeader>(data, size, "result");
}
