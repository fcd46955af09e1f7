// Shared body of the fuzz targets for the cereal control messages a peer sends
// (runtime/pipeline/protocol.h, launcher/session.h WorkerJob): the input is the control bytes of
// one message, decoded exactly as the receiver does with pipeline::decode<T>. pipelm::Error is
// the documented refusal (decode wraps cereal::Exception in it); anything else is a finding. A
// message that decodes must re-encode to the same bytes and decode again to the same bytes (no
// state the decoder invents or drops).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/base/error.h"
#include "runtime/pipeline/protocol.h"

namespace pipelm::fuzzing {

template <class T>
int fuzz_cereal_message(const uint8_t* data, size_t size, const char* what) {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    T v;
    try {
        v = pipeline::decode<T>(bytes, what);
    } catch (const Error&) {
        return 0;
    }
    const std::string again = pipeline::encode(v);
    const T w = pipeline::decode<T>(again, what);  // must not throw: we wrote it
    if (pipeline::encode(w) != again) __builtin_trap();
    return 0;
}

}  // namespace pipelm::fuzzing
