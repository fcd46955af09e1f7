// Fuzz target: a safetensors file's header as `-m DIR` reads each shard (runtime/hf/safetensors.h):
// the 8-byte length, the JSON header, every entry's dtype, shape and data_offsets. pipelm::Error is
// the expected way to refuse a file; a crash, another exception, a sanitizer report, a timeout or
// an allocation past -rss_limit_mb is a finding, and so is an accepted entry whose byte range is
// outside the file or disagrees with its shape.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/base/error.h"
#include "runtime/hf/safetensors.h"

namespace {

// The reader opens a path: the input goes into one memory file, reused for every run.
int input_fd() {
    static const int fd = memfd_create("fuzz.safetensors", 0);
    if (fd < 0) __builtin_trap();
    return fd;
}

void write_input(const uint8_t* data, size_t size) {
    const int fd = input_fd();
    if (ftruncate(fd, 0) != 0) __builtin_trap();
    size_t done = 0;
    while (done < size) {
        const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
        if (n <= 0) __builtin_trap();
        done += static_cast<size_t>(n);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace pipelm;
    write_input(data, size);
    hf::StFile f;
    try {
        f = hf::read_safetensors_header("/proc/self/fd/" + std::to_string(input_fd()));
    } catch (const Error&) {
        return 0;
    }
    for (const hf::StTensor& t : f.tensors) {
        if (t.begin > t.end || t.end > f.size || t.end > size) __builtin_trap();
        uint64_t n = 1;
        for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
        const uint64_t es = hf::st_dtype_size(t.dtype);
        if (es != 0 && n * es != t.end - t.begin) __builtin_trap();
    }
    return 0;
}
