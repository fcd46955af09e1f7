// GGUF v2/v3 reader: memory-maps the file, parses and validates the header, metadata and
// tensor table. Every malformed file raises pipelm::Error{kFormat} whose message names the
// file, the field or offset, and what was expected.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/ggml_types.h"

namespace pipelm::gguf {

enum class ValueType : uint32_t {
    kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
    kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};
const char* value_type_name(ValueType t);

// A metadata value. Scalars are widened: integers to int64/uint64, floats to double. Arrays keep
// their elements compactly, so that metadata costs at most a few times its bytes in the file:
// numbers and bools as the file's little-endian bytes, strings as strings, nested arrays as Values.
struct Value {
    ValueType type = ValueType::kU8;
    uint64_t u = 0;       // unsigned integers and bool
    int64_t i = 0;        // signed integers
    double f = 0;         // floats
    std::string s;        // strings
    ValueType elem_type = ValueType::kU8;  // arrays

    bool is_integer() const;
    int64_t as_int() const;      // any integer type (throws otherwise)
    double as_float() const;     // any numeric type

    // Arrays (type == kArray): element count, element k (widened like a scalar value), appending
    // an element of elem_type (throws Error{kInvalidArgument} for another type).
    size_t size() const;
    Value at(size_t k) const;
    void push_back(const Value& e);
    const std::vector<std::string>& strings() const { return strs; }  // a string array's elements

    // Storage of the elements (the reader fills it directly).
    std::vector<uint8_t> raw;        // numeric / bool elements, value_size(elem_type) bytes each
    std::vector<std::string> strs;   // string elements
    std::vector<Value> nested;       // array elements
};
// Bytes of one element of a numeric or bool type in a GGUF file (0 for strings and arrays).
size_t value_size(ValueType t);

struct TensorInfo {
    std::string name;
    std::vector<int64_t> ne;  // ne[0] fastest (ggml order)
    GgmlType type = GgmlType::kF32;
    uint64_t offset = 0;      // relative to the data section
    uint64_t bytes = 0;
    // Into the mapping. nullptr for a tensor that a TensorSource maps on first use (an HF
    // folder's large weights): read the bytes with GgufFile::data(t), which works for both.
    const uint8_t* data = nullptr;
    int64_t n_elements() const;
};

class MappedFile;

// Where the bytes of an assembled file's tensors come from (an HF folder's safetensors shards,
// runtime/hf/hf_folder.h): each tensor is mapped on the first data() call, so a stage maps only
// the tensors it reads. Thread-safe: stages of one process may load at once.
class TensorSource {
public:
    virtual ~TensorSource() = default;
    // The t.bytes bytes of `t` (kept mapped while the source lives). Throws Error{kIo}.
    virtual const uint8_t* map(const TensorInfo& t) const = 0;
    // Total bytes of the files behind the tensors.
    virtual uint64_t total_bytes() const = 0;
    // The mapped tensor's whole pages released from this process (as MappedFile::advise_dontneed:
    // a later read faults them back in from the file). Best effort; no-op if `t` is not mapped.
    virtual void release(const TensorInfo& t) const = 0;
};

class GgufFile {
public:
    // Opens and validates `path`. Throws Error{kIo} if it cannot be read, Error{kFormat} on any
    // malformed content.
    static std::shared_ptr<GgufFile> open(const std::string& path);
    // A file assembled from another format with GGUF's vocabulary (metadata keys and tensor names
    // as llama.cpp's converter writes them): `tensors` have offsets as a GGUF writer would lay them
    // out (version 3, alignment 32); those with data == nullptr are mapped by `source` on use.
    static std::shared_ptr<GgufFile> assemble(const std::string& path,
                                              std::vector<std::pair<std::string, Value>> metadata,
                                              std::vector<TensorInfo> tensors,
                                              std::shared_ptr<const TensorSource> source);

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    uint64_t file_size() const;
    uint64_t data_offset() const { return data_offset_; }

    // Metadata in file order.
    const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
    const Value* find(const std::string& key) const;
    bool has(const std::string& key) const { return find(key) != nullptr; }
    // Typed getters: throw Error{kFormat} naming the file and key if missing or of the wrong type.
    const Value& get(const std::string& key) const;
    std::string get_string(const std::string& key) const;
    int64_t get_int(const std::string& key) const;
    int64_t get_int(const std::string& key, int64_t fallback) const;
    double get_float(const std::string& key) const;
    double get_float(const std::string& key, double fallback) const;
    std::vector<std::string> get_string_array(const std::string& key) const;
    std::vector<int64_t> get_int_array(const std::string& key) const;

    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find_tensor(const std::string& name) const;
    // Throws Error{kFormat} "<file>: missing tensor '<name>'".
    const TensorInfo& tensor(const std::string& name) const;
    // The tensor's bytes: t.data, or mapped now by the TensorSource of an assembled file.
    const uint8_t* data(const TensorInfo& t) const;
    const TensorSource* source() const { return source_.get(); }

    // Asks the OS to page in / drop the bytes of a tensor (a stage touches only its own).
    void advise_willneed(const TensorInfo& t) const;
    // The tensor's whole pages released from this process (see MappedFile::advise_dontneed).
    void advise_dontneed(const TensorInfo& t) const;
    // The whole pages of bytes [begin, begin + bytes) of the tensor's data (clamped to it), for a
    // file that is mapped; a no-op for an assembled file (its source releases whole tensors).
    void advise_dontneed(const TensorInfo& t, uint64_t begin, uint64_t bytes) const;

    ~GgufFile();

private:
    GgufFile() = default;
    void parse();

    std::string path_;
    std::unique_ptr<MappedFile> map_;            // nullptr for an assembled file
    std::shared_ptr<const TensorSource> source_;  // assembled files only
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, Value>> kv_;
    std::map<std::string, size_t> kv_index_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t> tensor_index_;
};

}  // namespace pipelm::gguf
