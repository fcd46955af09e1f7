// Hugging Face checkpoints read directly: a folder with config.json, model*.safetensors (one file,
// or shards named by model.safetensors.index.json), tokenizer.json and tokenizer_config.json
// becomes a gguf::GgufFile with the metadata keys, tensor names, shapes and types that llama.cpp's
// convert_hf_to_gguf.py would write (same dtype), so every command and mode reads it as it reads
// a GGUF. The weight table (runtime/model/tensors.h) maps the names.
//
// Memory: opening reads only the JSON files and the safetensors headers. 1-D tensors (norms,
// biases) are read at once into F32 copies (the converter writes them F32); each 2-D weight is
// mmapped, exactly its byte range, on its first GgufFile::data() call, so a stage maps only the
// shards and tensors of its own layers. Weights are F32, F16 or BF16.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/gguf/gguf.h"

namespace pipelm::hf {

// -m PATH of every command: a GGUF file, or an HF folder. A single .safetensors file is refused
// (kInvalidArgument) with a pointer to the folder that holds it.
std::shared_ptr<gguf::GgufFile> open_model(const std::string& path);

// Opens an HF folder. Throws Error{kIo} for a missing file, Error{kFormat} for malformed JSON or
// safetensors (naming the file and the tensor), Error{kUnsupported} for another architecture,
// rope scaling, or a dtype other than F32/F16/BF16.
std::shared_ptr<gguf::GgufFile> open_hf_folder(const std::string& dir);

// What the folder's source has mapped so far, in mapping order (tests: a stage maps only its
// own tensors). Empty for a GGUF file.
struct MappedRange {
    std::string tensor;  // GGUF name
    std::string file;    // the shard
    uint64_t begin = 0, end = 0;  // byte range of the tensor in the shard
};
std::vector<MappedRange> mapped_ranges(const gguf::GgufFile& f);

}  // namespace pipelm::hf
