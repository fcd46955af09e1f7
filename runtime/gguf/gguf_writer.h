// GGUF v3 writer: metadata, tensor table, aligned data. Tensor bytes are produced by a callback
// at write time so that large models are streamed, not held in memory.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/gguf/gguf.h"

namespace pipelm::gguf {

class GgufWriter {
public:
    explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}

    void set(const std::string& key, Value v);
    void set_u32(const std::string& key, uint32_t v);
    void set_i32(const std::string& key, int32_t v);
    void set_f32(const std::string& key, float v);
    void set_bool(const std::string& key, bool v);
    void set_string(const std::string& key, const std::string& v);
    void set_string_array(const std::string& key, const std::vector<std::string>& v);
    void set_i32_array(const std::string& key, const std::vector<int32_t>& v);

    // `fill(dst)` writes exactly the tensor's byte size into dst when the file is written.
    using Fill = std::function<void(uint8_t* dst)>;
    void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne, Fill fill);

    // Writes the file (atomically: to path + ".tmp", then rename). Throws Error{kIo}.
    void write(const std::string& path, uint32_t version = 3) const;

    static Value make_string(const std::string& s);
    // The keys set so far, in order (an HF folder's metadata is built with the setters above).
    const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }

private:
    struct PendingTensor {
        std::string name;
        GgmlType type;
        std::vector<int64_t> ne;
        uint64_t bytes;
        Fill fill;
    };
    uint32_t alignment_;
    std::vector<std::pair<std::string, Value>> kv_;
    std::vector<PendingTensor> tensors_;
};

}  // namespace pipelm::gguf
