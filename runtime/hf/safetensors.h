// safetensors header reader: an 8-byte little-endian header length, a JSON object
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the raw
// little-endian tensor data (offsets relative to the end of the header). Only the header is read
// (pread); the data stays on disk until a tensor is mapped (hf_folder.h). Every size is bounded
// by the file size; a malformed header raises Error{kFormat} naming the file and the tensor.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pipelm::hf {

struct StTensor {
    std::string name;
    std::string dtype;            // "F32", "F16", "BF16", ... as written
    std::vector<int64_t> shape;   // row-major, outermost first (HF order)
    uint64_t begin = 0, end = 0;  // absolute byte offsets in the file, begin <= end <= file size
};

struct StFile {
    std::string path;
    uint64_t size = 0;               // file size
    std::vector<StTensor> tensors;   // sorted by name
};

// Bytes per element of a safetensors dtype; 0 for dtypes pipelm does not read.
uint64_t st_dtype_size(const std::string& dtype);

// Reads and validates the header of `path`. Throws Error{kIo} if it cannot be read,
// Error{kFormat} for a malformed header: e.g. "<path>: tensor 'x': data_offsets [0, 9] hold 9
// bytes but shape [2, 2] of F32 needs 16".
StFile read_safetensors_header(const std::string& path);

}  // namespace pipelm::hf
