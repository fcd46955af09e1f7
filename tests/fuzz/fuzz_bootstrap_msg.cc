// Fuzz target: the TCP bootstrap's control messages (transport/tcp_bootstrap.cc) read with
// wire::ByteReader (transport/frame.h): the first byte picks the layout, the rest is the control
// bytes. Layouts: the Assign (session u64, stage i32, n_stages i32, timeout_ms u32, next address
// str, job str) and the Hello/Ready/Start stage message (session u64, stage i32), in the order
// decode_assign / expect_stage_msg read them (both live in tcp_bootstrap.cc's unnamed namespace,
// so the field sequence is repeated here). pipelm::Error is the refusal; a message that parses
// must re-encode with ByteWriter to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/base/error.h"
#include "transport/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace pipelm::transport::wire;
    if (size < 1) return 0;
    const uint8_t layout = data[0] & 1;
    const std::string in(reinterpret_cast<const char*>(data + 1), size - 1);
    ByteWriter w;
    try {
        ByteReader r(in, "fuzz bootstrap message");
        w.u64(r.u64());
        w.i32(r.i32());
        if (layout == 0) {
            w.i32(r.i32());
            w.u32(r.u32());
            w.str(r.str());
            w.str(r.str());
        }
        r.expect_end();
    } catch (const pipelm::Error&) {
        return 0;
    }
    if (w.take() != in) __builtin_trap();
    return 0;
}
