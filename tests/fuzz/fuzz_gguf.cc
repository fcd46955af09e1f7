// Fuzz target: a GGUF file as pipelm reads one before any weight — the reader (header, metadata,
// tensor table), the GLM-4 checks of the weight table (Glm4Config::from_gguf), the planner's byte
// counts, the model identity, and the tokenizer built from the file's vocabulary encoding a
// short text. pipelm::Error is the expected way to refuse a file; anything else (a crash, another
// exception, a sanitizer report, a timeout, an allocation past -rss_limit_mb) is a finding.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/base/error.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/glm4_config.h"
#include "runtime/pipeline/planner.h"
#include "runtime/pipeline/stage_runner.h"
#include "runtime/tokenizer/gguf_vocab.h"
#include "runtime/tokenizer/tokenizer.h"

namespace {

// The reader maps a path: the input goes into one memory file, reused for every run.
const std::string& input_path() {
    static const std::string path = [] {
        const int fd = memfd_create("fuzz.gguf", 0);
        if (fd < 0) __builtin_trap();
        return "/proc/self/fd/" + std::to_string(fd);
    }();
    return path;
}

void write_input(const uint8_t* data, size_t size) {
    const int fd = std::stoi(input_path().substr(14));
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
    std::shared_ptr<gguf::GgufFile> f;
    try {
        f = gguf::GgufFile::open(input_path());
    } catch (const Error&) {
        return 0;
    }
    (void)pipeline::model_identity(*f);
    try {
        const model::Glm4Config cfg = model::Glm4Config::from_gguf(*f);
        (void)pipeline::ModelCosts::from_gguf(*f, cfg);
    } catch (const Error&) {
    }
    try {
        tok::Tokenizer t(tok::vocab_from_gguf(*f));
        (void)t.encode("[gMASK]<sop>Hello, wörld 123 \xF0\x9F\x90\xB3!", true);
    } catch (const Error&) {
    }
    return 0;
}
