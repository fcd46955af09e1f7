// The glm4-demo F16 model compiled into the executable (assets/glm4-demo-f16.gguf), written to
// the cache directory the first time `pipelm run` needs it.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "launcher/commands.h"
#include "runtime/base/error.h"

__asm__(".section .rodata\n"
        ".balign 64\n"
        ".global pipelm_demo_gguf_begin\n"
        "pipelm_demo_gguf_begin:\n"
        ".incbin \"" PIPELM_DEMO_GGUF "\"\n"
        ".global pipelm_demo_gguf_end\n"
        "pipelm_demo_gguf_end:\n"
        ".byte 0\n"
        ".previous\n");

extern "C" const unsigned char pipelm_demo_gguf_begin[];
extern "C" const unsigned char pipelm_demo_gguf_end[];

namespace pipelm::launcher {
namespace {

std::string cache_dir() {
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/pipelm";
    if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/pipelm";
    return "/tmp/pipelm-cache";
}

void mkdirs(const std::string& path) {
    std::string cur;
    for (size_t i = 0; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            if (!cur.empty()) ::mkdir(cur.c_str(), 0755);
        }
        if (i < path.size()) cur += path[i];
    }
}

bool same_contents(const std::string& path, const unsigned char* data, size_t n) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::vector<char> buf(n);
    in.read(buf.data(), static_cast<std::streamsize>(n));
    if (static_cast<size_t>(in.gcount()) != n || in.peek() != EOF) return false;
    return std::memcmp(buf.data(), data, n) == 0;
}

}  // namespace

std::string default_model_path() {
    const size_t n = static_cast<size_t>(pipelm_demo_gguf_end - pipelm_demo_gguf_begin);
    const std::string dir = cache_dir();
    const std::string path = dir + "/glm4-demo-f16.gguf";
    if (same_contents(path, pipelm_demo_gguf_begin, n)) return path;
    mkdirs(dir);
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::binary);
        if (!out)
            PIPELM_THROW(ErrorCode::kIo, "cannot write the embedded demo model to ", tmp, ": ", std::strerror(errno),
                         " (set XDG_CACHE_HOME to a writable directory, or pass -m FILE.gguf)");
        out.write(reinterpret_cast<const char*>(pipelm_demo_gguf_begin), static_cast<std::streamsize>(n));
        if (!out) PIPELM_THROW(ErrorCode::kIo, "write failed: ", tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        PIPELM_THROW(ErrorCode::kIo, "cannot rename ", tmp, " to ", path, ": ", std::strerror(errno));
    return path;
}

}  // namespace pipelm::launcher
