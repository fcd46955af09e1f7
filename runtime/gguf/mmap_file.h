// Read-only memory mapping of a whole file (RAII).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace pipelm::gguf {

class MappedFile {
public:
    // Throws Error{kIo} naming the path and the OS error.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    // madvise hints for a byte range (best effort).
    void advise_willneed(size_t offset, size_t bytes) const;
    // Releases the whole pages inside a byte range from this process (MADV_DONTNEED): for a
    // weight that was copied elsewhere at load. Safe on this read-only mapping: a later read
    // faults the bytes back in from the file (page cache).
    void advise_dontneed(size_t offset, size_t bytes) const;

private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace pipelm::gguf
