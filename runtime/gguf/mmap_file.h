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

private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace pipelm::gguf
