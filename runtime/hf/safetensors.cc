#include "runtime/hf/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/base/error.h"

namespace pipelm::hf {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;  // safetensors' own limit is 100 MB

// pread of exactly n bytes at `off` (an fd owned by the caller).
void read_exact(int fd, const std::string& path, uint64_t off, void* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
        const ssize_t r = ::pread(fd, static_cast<char*>(dst) + got, n - got, static_cast<off_t>(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) PIPELM_THROW(ErrorCode::kIo, path, ": cannot read ", n, " bytes at offset ", off, ": ",
                                 r < 0 ? std::strerror(errno) : "unexpected end of file");
        got += static_cast<size_t>(r);
    }
}

// One header entry, checked against the data section of `data_bytes` bytes at `data_start`.
StTensor parse_entry(const std::string& path, const std::string& name, const json& e, uint64_t data_start,
                     uint64_t data_bytes) {
    auto bad = [&](const std::string& why) {
        PIPELM_THROW(ErrorCode::kFormat, path, ": tensor '", name, "': ", why, " (malformed safetensors header)");
    };
    if (!e.is_object()) bad("entry is not an object");
    StTensor t;
    t.name = name;
    const auto dt = e.find("dtype");
    if (dt == e.end() || !dt->is_string()) bad("no string 'dtype'");
    t.dtype = dt->get<std::string>();
    const auto sh = e.find("shape");
    if (sh == e.end() || !sh->is_array() || sh->size() > 8) bad("'shape' is not an array of at most 8 dims");
    uint64_t n = 1;
    for (const json& d : *sh) {
        if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 40)) bad("a 'shape' entry is not a size");
        const uint64_t v = d.get<uint64_t>();
        if (v != 0 && n > (1ull << 48) / v) bad("'shape' has more elements than any file holds");
        n *= v;
        t.shape.push_back(static_cast<int64_t>(v));
    }
    const auto off = e.find("data_offsets");
    if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
        bad("'data_offsets' is not [begin, end]");
    const uint64_t b = (*off)[0].get<uint64_t>(), en = (*off)[1].get<uint64_t>();
    if (b > en || en > data_bytes)
        bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "] are outside the " +
            std::to_string(data_bytes) + " data bytes of the file (truncated?)");
    const uint64_t es = st_dtype_size(t.dtype);
    if (es != 0 && n * es != en - b)
        bad("data_offsets hold " + std::to_string(en - b) + " bytes but the shape of " + t.dtype + " needs " +
            std::to_string(n * es));
    t.begin = data_start + b;
    t.end = data_start + en;
    return t;
}

}  // namespace

uint64_t st_dtype_size(const std::string& dtype) {
    if (dtype == "F32") return 4;
    if (dtype == "F16" || dtype == "BF16") return 2;
    return 0;
}

StFile read_safetensors_header(const std::string& path) {
    StFile f;
    f.path = path;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) PIPELM_THROW(ErrorCode::kIo, path, ": cannot open: ", std::strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        PIPELM_THROW(ErrorCode::kIo, path, ": not a readable regular file");
    f.size = static_cast<uint64_t>(st.st_size);
    if (f.size < 8) PIPELM_THROW(ErrorCode::kFormat, path, ": ", f.size, " bytes is too short for a safetensors file");
    uint8_t le[8];
    read_exact(fd, path, 0, le, 8);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; --k) hlen = (hlen << 8) | le[k];
    if (hlen < 2 || hlen > kMaxHeader || hlen > f.size - 8)
        PIPELM_THROW(ErrorCode::kFormat, path, ": header length ", hlen, " does not fit the file of ", f.size,
                     " bytes (not a safetensors file, or truncated)");
    std::string text(static_cast<size_t>(hlen), '\0');
    read_exact(fd, path, 8, text.data(), text.size());
    json h = json::parse(text, nullptr, false);
    if (h.is_discarded() || !h.is_object())
        PIPELM_THROW(ErrorCode::kFormat, path, ": the header is not a JSON object (malformed safetensors file)");
    const uint64_t data_start = 8 + hlen;
    for (auto it = h.begin(); it != h.end(); ++it)
        if (it.key() != "__metadata__")
            f.tensors.push_back(parse_entry(path, it.key(), it.value(), data_start, f.size - data_start));
    std::sort(f.tensors.begin(), f.tensors.end(), [](const StTensor& a, const StTensor& b) { return a.name < b.name; });
    return f;
}

}  // namespace pipelm::hf
