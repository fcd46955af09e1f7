#include "runtime/hf/hf_folder.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/base/error.h"
#include "runtime/base/fp16.h"
#include "runtime/base/log.h"
#include "runtime/hf/hf_config.h"
#include "runtime/hf/safetensors.h"
#include "runtime/model/glm4_config.h"
#include "runtime/model/tensors.h"
#include "runtime/tokenizer/hf_vocab.h"

namespace pipelm::hf {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Where a 2-D tensor's bytes are: a byte range of a shard.
struct Place {
    std::string file;
    uint64_t begin = 0, bytes = 0;
};

// The TensorSource of an HF folder: maps a weight's byte range on first use (once; thread-safe)
// and owns the F32 copies of the 1-D tensors.
class ShardSource final : public gguf::TensorSource {
public:
    std::map<std::string, Place> places;            // GGUF name -> bytes in a shard
    std::vector<std::vector<float>> vectors;        // 1-D tensors, F32 (TensorInfo::data points here)
    uint64_t files_bytes = 0;

    ~ShardSource() override {
        for (const Map& m : maps_) ::munmap(m.base, m.len);
        for (void* p : copies_) std::free(p);
    }
    uint64_t total_bytes() const override { return files_bytes; }

    const uint8_t* map(const gguf::TensorInfo& t) const override {
        std::lock_guard<std::mutex> lock(mu_);
        if (auto it = mapped_.find(t.name); it != mapped_.end()) return it->second;
        auto pl = places.find(t.name);
        if (pl == places.end()) PIPELM_THROW(ErrorCode::kInternal, "no shard holds tensor '", t.name, "'");
        const Place& p = pl->second;
        const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        const uint64_t start = p.begin / page * page, len = p.begin + p.bytes - start;
        const int fd = ::open(p.file.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) PIPELM_THROW(ErrorCode::kIo, p.file, ": cannot open: ", std::strerror(errno));
        void* base = ::mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, static_cast<off_t>(start));
        const int e = errno;
        ::close(fd);
        if (base == MAP_FAILED)
            PIPELM_THROW(ErrorCode::kIo, p.file, ": cannot mmap tensor '", t.name, "': ", std::strerror(e));
        const uint8_t* data = static_cast<const uint8_t*>(base) + (p.begin - start);
        ranges_.push_back({t.name, p.file, p.begin, p.begin + p.bytes});
        PIPELM_DEBUG("hf: mapped ", t.name, " from ", p.file, " [", p.begin, ", ", p.begin + p.bytes, ")");
        if (reinterpret_cast<uintptr_t>(data) % ggml_type_info(t.type).block_bytes != 0) {
            // An element not at a multiple of its size (a valid but odd safetensors file): the
            // kernels read whole elements, so the tensor is copied to aligned memory. Real files
            // align to the element (not to GGUF's 32 bytes, which the kernels do not need).
            void* copy = std::aligned_alloc(32, (p.bytes + 31) / 32 * 32);
            if (!copy) PIPELM_THROW(ErrorCode::kOutOfMemory, "cannot allocate ", p.bytes, " bytes for tensor '", t.name, "'");
            std::memcpy(copy, data, p.bytes);
            ::munmap(base, len);
            copies_.push_back(copy);
            copied_.insert(t.name);
            data = static_cast<const uint8_t*>(copy);
        } else {
            maps_.push_back({base, len});
        }
        mapped_[t.name] = data;
        return data;
    }

    void release(const gguf::TensorInfo& t) const override {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = mapped_.find(t.name);
        if (it == mapped_.end() || copied_.count(t.name)) return;  // a heap copy must keep its bytes
        const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
        const uintptr_t a = reinterpret_cast<uintptr_t>(it->second), b = a + t.bytes;
        const uintptr_t start = (a + page - 1) / page * page, end = b / page * page;  // whole pages only
        if (end > start) ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
    }

    std::vector<MappedRange> ranges() const {
        std::lock_guard<std::mutex> lock(mu_);
        return ranges_;
    }

private:
    struct Map {
        void* base;
        size_t len;
    };
    mutable std::mutex mu_;
    mutable std::map<std::string, const uint8_t*> mapped_;
    mutable std::vector<Map> maps_;
    mutable std::vector<void*> copies_;       // misaligned tensors, copied to 32-byte-aligned memory
    mutable std::set<std::string> copied_;
    mutable std::vector<MappedRange> ranges_;
};

// The shard files in the converter's order: the index's files, else model.safetensors, else every
// model*.safetensors, sorted by name.
std::vector<std::string> shard_files(const std::string& dir) {
    std::vector<std::string> names;
    const std::string index = dir + "/model.safetensors.index.json";
    if (fs::exists(index)) {
        std::ifstream in(index, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        const json j = json::parse(ss.str(), nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
            PIPELM_THROW(ErrorCode::kFormat, index, ": no weight_map object");
        for (const auto& [tensor, file] : j["weight_map"].items()) {
            if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos)
                PIPELM_THROW(ErrorCode::kFormat, index, ": tensor '", tensor, "' maps to ", file.dump(),
                             ", not a file name in the folder");
            names.push_back(file.get<std::string>());
        }
    } else if (fs::exists(dir + "/model.safetensors")) {
        names.push_back("model.safetensors");
    } else {
        for (const auto& e : fs::directory_iterator(dir)) {
            const std::string n = e.path().filename().string();
            if (n.rfind("model", 0) == 0 && n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0)
                names.push_back(n);
        }
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    if (names.empty())
        PIPELM_THROW(ErrorCode::kIo, dir, ": no model*.safetensors (an HF folder holds config.json, the "
                                      "safetensors weights and tokenizer.json)");
    for (auto& n : names) n = dir + "/" + n;
    return names;
}

GgmlType ggml_type_of(const StFile& f, const StTensor& t) {
    if (t.dtype == "F32") return GgmlType::kF32;
    if (t.dtype == "F16") return GgmlType::kF16;
    if (t.dtype == "BF16") return GgmlType::kBF16;
    PIPELM_THROW(ErrorCode::kUnsupported, f.path, ": tensor '", t.name, "' has dtype ", t.dtype,
                 " (pipelm reads F32, F16 and BF16 checkpoints; quantized ones: convert with llama.cpp)");
}

// A 1-D tensor read (pread) and widened to F32, as the converter writes norms and biases.
std::vector<float> read_vector(const StFile& f, const StTensor& t, GgmlType type) {
    const uint64_t n = t.shape.empty() ? 1 : static_cast<uint64_t>(t.shape[0]);
    std::vector<uint8_t> raw(t.end - t.begin);
    std::ifstream in(f.path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(t.begin));
    if (!in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size())))
        PIPELM_THROW(ErrorCode::kIo, f.path, ": cannot read tensor '", t.name, "'");
    std::vector<float> v(n);
    for (uint64_t i = 0; i < n; ++i) {
        uint16_t h = 0;
        if (type == GgmlType::kF32) {
            std::memcpy(&v[i], raw.data() + 4 * i, 4);
            continue;
        }
        std::memcpy(&h, raw.data() + 2 * i, 2);
        v[i] = type == GgmlType::kF16 ? fp16_to_f32(h) : bf16_to_f32(h);
    }
    return v;
}

model::Glm4Config table_config(const HfConfig& h, bool tied) {
    model::Glm4Config c;
    c.n_layer = static_cast<int>(h.n_layer);
    c.n_embd = static_cast<int>(h.n_embd);
    c.n_head = static_cast<int>(h.n_head);
    c.n_head_kv = static_cast<int>(h.n_head_kv);
    c.head_dim = static_cast<int>(h.head_dim);
    c.n_ff = static_cast<int>(h.n_ff);
    c.n_vocab = static_cast<int>(h.n_vocab);
    c.qkv_bias = h.attention_bias;
    c.tied_output = tied;
    return c;
}

uint32_t llama_file_type(const std::vector<gguf::TensorInfo>& ts) {
    for (const auto& t : ts)
        if (t.ne.size() == 2 && t.type == GgmlType::kF16) return 1;   // LLAMA_FTYPE_MOSTLY_F16
    for (const auto& t : ts)
        if (t.ne.size() == 2 && t.type == GgmlType::kBF16) return 32;  // LLAMA_FTYPE_MOSTLY_BF16
    return 0;                                                          // LLAMA_FTYPE_ALL_F32
}

}  // namespace

std::shared_ptr<gguf::GgufFile> open_hf_folder(const std::string& dir_in) {
    std::string dir = dir_in;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    const HfConfig hc = read_hf_config(dir);
    std::vector<StFile> shards;
    for (const std::string& p : shard_files(dir)) shards.push_back(read_safetensors_header(p));
    // HF name -> (shard, entry); then the weight table says which names a GLM-4 file has.
    std::map<std::string, std::pair<const StFile*, const StTensor*>> by_name;
    for (const StFile& f : shards)
        for (const StTensor& t : f.tensors) {
            if (t.name.size() >= 20 && t.name.compare(t.name.size() - 20, 20, "rotary_emb.inv_freq") == 0) continue;
            if (!by_name.emplace(t.name, std::make_pair(&f, &t)).second)
                PIPELM_THROW(ErrorCode::kFormat, f.path, ": tensor '", t.name, "' is also in another shard");
        }
    const bool tied = !by_name.count(model::hf_tensor_name(model::TensorId::kOutput));
    if (tied && !hc.tie_word_embeddings)
        PIPELM_THROW(ErrorCode::kFormat, dir, ": no tensor '", model::hf_tensor_name(model::TensorId::kOutput),
                     "' and config.json's tie_word_embeddings is false");
    const model::Glm4Config tc = table_config(hc, tied);
    std::map<std::string, std::pair<std::string, model::TensorId>> expected;  // HF -> (GGUF name, id)
    model::for_each_tensor(tc, tc.n_layer, [&](model::TensorId id, int l) {
        expected[model::hf_tensor_name(id, l)] = {model::tensor_name(id, l), id};
    });
    for (const auto& [name, where] : by_name)
        if (!expected.count(name))
            PIPELM_THROW(ErrorCode::kUnsupported, where.first->path, ": tensor '", name,
                         "' is not a Glm4ForCausalLM weight (config.json's attention_bias is ", hc.attention_bias, ")");

    auto src = std::make_shared<ShardSource>();
    std::vector<gguf::TensorInfo> infos;
    uint64_t offset = 0;
    for (const StFile& f : shards) {
        src->files_bytes += f.size;
        for (const StTensor& t : f.tensors) {  // the converter's order: shard by shard, by name
            auto e = expected.find(t.name);
            if (e == expected.end()) continue;
            gguf::TensorInfo ti;
            ti.name = e->second.first;
            ti.ne.assign(t.shape.rbegin(), t.shape.rend());
            const GgmlType st = ggml_type_of(f, t);
            if (ti.ne.size() == 1) {
                src->vectors.push_back(read_vector(f, t, st));
                ti.type = GgmlType::kF32;
                ti.data = reinterpret_cast<const uint8_t*>(src->vectors.back().data());
            } else {
                ti.type = st;
                src->places[ti.name] = Place{f.path, t.begin, t.end - t.begin};
            }
            ti.bytes = ggml_row_bytes(ti.type, ti.n_elements());
            ti.offset = offset;
            offset = (offset + ti.bytes + 31) / 32 * 32;  // as a GGUF writer (alignment 32) lays it out
            infos.push_back(std::move(ti));
            expected.erase(e);
        }
    }
    if (!expected.empty())
        PIPELM_THROW(ErrorCode::kFormat, dir, ": missing tensor '", expected.begin()->first, "' (",
                     expected.begin()->second.first, ")");

    gguf::GgufWriter w;
    hf_config_to_gguf(hc, fs::path(dir).filename().string(), llama_file_type(infos), w);
    tok::hf_vocab_to_gguf(dir, hc.n_vocab, w);
    w.set_u32("general.quantization_version", 2);
    PIPELM_DEBUG("hf: ", dir, ": ", infos.size(), " tensors in ", shards.size(), " shard(s)");
    return gguf::GgufFile::assemble(dir, w.metadata(), std::move(infos), std::move(src));
}

std::shared_ptr<gguf::GgufFile> open_model(const std::string& path) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) return open_hf_folder(path);
    const std::string ext = ".safetensors";
    if (path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0) {
        const std::string parent = fs::path(path).parent_path().string();
        PIPELM_THROW(ErrorCode::kInvalidArgument, path, " is one safetensors file: pass the Hugging Face folder that "
                     "holds it with config.json and tokenizer.json (-m ", parent.empty() ? "." : parent, ")");
    }
    return gguf::GgufFile::open(path);
}

std::vector<MappedRange> mapped_ranges(const gguf::GgufFile& f) {
    const auto* s = dynamic_cast<const ShardSource*>(f.source());
    return s ? s->ranges() : std::vector<MappedRange>{};
}

}  // namespace pipelm::hf
