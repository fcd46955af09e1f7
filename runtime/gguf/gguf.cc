// GGUF reader. Layout (ggml docs/gguf.md): magic, version, tensor_count, kv_count, kv pairs,
// tensor infos, padding to `general.alignment` (default 32), tensor data.
// Every count and length is bounded by the bytes left in the file before anything is allocated.
#include "runtime/gguf/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/base/error.h"
#include "runtime/gguf/mmap_file.h"

namespace pipelm::gguf {

const char* value_type_name(ValueType t) {
    switch (t) {
        case ValueType::kU8: return "u8";
        case ValueType::kI8: return "i8";
        case ValueType::kU16: return "u16";
        case ValueType::kI16: return "i16";
        case ValueType::kU32: return "u32";
        case ValueType::kI32: return "i32";
        case ValueType::kF32: return "f32";
        case ValueType::kBool: return "bool";
        case ValueType::kString: return "string";
        case ValueType::kArray: return "array";
        case ValueType::kU64: return "u64";
        case ValueType::kI64: return "i64";
        case ValueType::kF64: return "f64";
    }
    return "?";
}

bool Value::is_integer() const {
    switch (type) {
        case ValueType::kU8: case ValueType::kI8: case ValueType::kU16: case ValueType::kI16:
        case ValueType::kU32: case ValueType::kI32: case ValueType::kU64: case ValueType::kI64:
        case ValueType::kBool:
            return true;
        default:
            return false;
    }
}

int64_t Value::as_int() const {
    switch (type) {
        case ValueType::kU8: case ValueType::kU16: case ValueType::kU32: case ValueType::kU64:
        case ValueType::kBool:
            return static_cast<int64_t>(u);
        case ValueType::kI8: case ValueType::kI16: case ValueType::kI32: case ValueType::kI64:
            return i;
        default:
            PIPELM_THROW(ErrorCode::kFormat, "expected an integer, found ", value_type_name(type));
    }
}

double Value::as_float() const {
    if (type == ValueType::kF32 || type == ValueType::kF64) return f;
    return static_cast<double>(as_int());
}

size_t value_size(ValueType t) {
    switch (t) {
        case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: return 1;
        case ValueType::kU16: case ValueType::kI16: return 2;
        case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: return 4;
        case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: return 8;
        case ValueType::kString: case ValueType::kArray: return 0;
    }
    return 0;
}

size_t Value::size() const {
    if (elem_type == ValueType::kString) return strs.size();
    if (elem_type == ValueType::kArray) return nested.size();
    return raw.size() / value_size(elem_type);
}

Value Value::at(size_t k) const {
    PIPELM_CHECK(type == ValueType::kArray && k < size(), "array element ", k, " of ", size());
    if (elem_type == ValueType::kString) {
        Value v;
        v.type = ValueType::kString;
        v.s = strs[k];
        return v;
    }
    if (elem_type == ValueType::kArray) return nested[k];
    Value v;
    v.type = elem_type;
    const uint8_t* p = raw.data() + k * value_size(elem_type);
    auto get = [p](auto x) {
        std::memcpy(&x, p, sizeof(x));
        return x;
    };
    switch (elem_type) {
        case ValueType::kU8: case ValueType::kBool: v.u = get(uint8_t{}); break;
        case ValueType::kI8: v.i = get(int8_t{}); break;
        case ValueType::kU16: v.u = get(uint16_t{}); break;
        case ValueType::kI16: v.i = get(int16_t{}); break;
        case ValueType::kU32: v.u = get(uint32_t{}); break;
        case ValueType::kI32: v.i = get(int32_t{}); break;
        case ValueType::kU64: v.u = get(uint64_t{}); break;
        case ValueType::kI64: v.i = get(int64_t{}); break;
        case ValueType::kF32: v.f = get(float{}); break;
        case ValueType::kF64: v.f = get(double{}); break;
        case ValueType::kString: case ValueType::kArray: break;
    }
    return v;
}

void Value::push_back(const Value& e) {
    PIPELM_CHECK(type == ValueType::kArray && e.type == elem_type, "array of ", value_type_name(elem_type),
                 ": cannot append a ", value_type_name(e.type));
    if (elem_type == ValueType::kString) {
        strs.push_back(e.s);
        return;
    }
    if (elem_type == ValueType::kArray) {
        nested.push_back(e);
        return;
    }
    auto put = [this](auto x) {
        const size_t at = raw.size();
        raw.resize(at + sizeof(x));
        std::memcpy(raw.data() + at, &x, sizeof(x));
    };
    switch (elem_type) {
        case ValueType::kU8: case ValueType::kBool: put(static_cast<uint8_t>(e.u)); break;
        case ValueType::kI8: put(static_cast<int8_t>(e.i)); break;
        case ValueType::kU16: put(static_cast<uint16_t>(e.u)); break;
        case ValueType::kI16: put(static_cast<int16_t>(e.i)); break;
        case ValueType::kU32: put(static_cast<uint32_t>(e.u)); break;
        case ValueType::kI32: put(static_cast<int32_t>(e.i)); break;
        case ValueType::kU64: put(e.u); break;
        case ValueType::kI64: put(e.i); break;
        case ValueType::kF32: put(static_cast<float>(e.f)); break;
        case ValueType::kF64: put(e.f); break;
        case ValueType::kString: case ValueType::kArray: break;
    }
}

int64_t TensorInfo::n_elements() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    return n;
}

namespace {

constexpr int kMaxArrayDepth = 8;
// Counts come from the file: reserve at most this many elements up front (the vectors grow as the
// elements are actually read, so a count that lies fails at the truncation, not in the allocator).
constexpr uint64_t kMaxReserve = 4096;
// Numeric array elements are kept as their file bytes (1x); a string element costs a std::string
// (32 bytes, its file minimum is 8) and a nested array a Value (~150 bytes, file minimum 12). This
// budget bounds those: string elements count 1, nested arrays kNestedCost, so that a corrupt
// count the file's bytes happen to cover cannot turn metadata into gigabytes. Real GGUFs hold a
// few hundred thousand strings (vocabulary, merges).
constexpr uint64_t kMaxMetadataElements = uint64_t(1) << 24;
constexpr uint64_t kNestedCost = 16;
constexpr size_t kMaxNameBytes = 64;  // GGML_MAX_NAME, including the terminating NUL
constexpr uint32_t kMaxDims = 4;

// Smallest number of file bytes one element of type t takes.
size_t scalar_size(ValueType t) {
    if (const size_t n = value_size(t)) return n;
    return t == ValueType::kString ? 8 : 12;  // the length field; type + count of an array
}

// A name read from the file, made safe for a one-line message: control bytes escaped, long names cut.
std::string printable(const std::string& name) {
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (size_t k = 0; k < name.size(); ++k) {
        if (out.size() >= 80) {
            out += "...";
            break;
        }
        const unsigned char ch = static_cast<unsigned char>(name[k]);
        if (ch < 0x20 || ch == 0x7f) {
            out += "\\x";
            out += hex[ch >> 4];
            out += hex[ch & 15];
        } else {
            out += static_cast<char>(ch);
        }
    }
    return out;
}

class Cursor {
public:
    Cursor(const std::string& path, const uint8_t* data, size_t size) : path_(path), data_(data), size_(size) {}

    size_t pos() const { return pos_; }
    size_t left() const { return size_ - pos_; }

    // `what` names the field; `key`, when given, the metadata key it belongs to (the message is
    // only built on failure: this runs for every one of a vocabulary's strings).
    void need(size_t n, const char* what, const std::string* key = nullptr) const {
        if (n > left())
            PIPELM_THROW(ErrorCode::kFormat, path_, ": truncated at offset ", pos_, " while reading ", what,
                         key ? " of key '" + printable(*key) + "'" : std::string(), " (needs ", n, " bytes, ", left(),
                         " left of ", size_, "): the file is incomplete; download it again");
    }
    template <typename T>
    T read(const char* what, const std::string* key = nullptr) {
        need(sizeof(T), what, key);
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string read_string(const char* what, const std::string* key = nullptr) {
        const size_t at = pos_;
        const uint64_t len = read<uint64_t>(what, key);
        if (len > left())
            PIPELM_THROW(ErrorCode::kFormat, path_, ": string length ", len, " at offset ", at, " (", what,
                         key ? " of key '" + printable(*key) + "'" : std::string(), ") exceeds the ", left(),
                         " bytes left in the file");
        std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return s;
    }
    const uint8_t* here() const { return data_ + pos_; }
    void skip(size_t n) { pos_ += n; }
    [[noreturn]] void fail(size_t at, const std::string& msg) const {
        PIPELM_THROW(ErrorCode::kFormat, path_, ": offset ", at, ": ", msg);
    }

private:
    const std::string& path_;
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kF64); }

// `elements_left` is the budget of array elements for the whole metadata (kMaxMetadataElements).
Value read_value(Cursor& c, ValueType type, const std::string& key, int depth, uint64_t& elements_left) {
    Value v;
    v.type = type;
    switch (type) {
        case ValueType::kU8: v.u = c.read<uint8_t>("u8 value", &key); break;
        case ValueType::kI8: v.i = c.read<int8_t>("i8 value", &key); break;
        case ValueType::kU16: v.u = c.read<uint16_t>("u16 value", &key); break;
        case ValueType::kI16: v.i = c.read<int16_t>("i16 value", &key); break;
        case ValueType::kU32: v.u = c.read<uint32_t>("u32 value", &key); break;
        case ValueType::kI32: v.i = c.read<int32_t>("i32 value", &key); break;
        case ValueType::kU64: v.u = c.read<uint64_t>("u64 value", &key); break;
        case ValueType::kI64: v.i = c.read<int64_t>("i64 value", &key); break;
        case ValueType::kF32: v.f = c.read<float>("f32 value", &key); break;
        case ValueType::kF64: v.f = c.read<double>("f64 value", &key); break;
        case ValueType::kBool: {
            const size_t at = c.pos();
            const uint8_t b = c.read<uint8_t>("bool value", &key);
            if (b > 1)
                c.fail(at, "bool value of key '" + printable(key) + "' is " + std::to_string(b) + ", expected 0 or 1");
            v.u = b;
            break;
        }
        case ValueType::kString: v.s = c.read_string("string value", &key); break;
        case ValueType::kArray: {
            const size_t at = c.pos();
            if (depth >= kMaxArrayDepth)
                c.fail(at, "arrays nested deeper than 8 levels in key '" + printable(key) + "'");
            const uint32_t et = c.read<uint32_t>("array element type", &key);
            if (!valid_value_type(et))
                c.fail(at, "array of key '" + printable(key) + "' has unknown element type " + std::to_string(et) +
                               " (expected 0..12)");
            const uint64_t n = c.read<uint64_t>("array length", &key);
            const size_t min_elem = scalar_size(static_cast<ValueType>(et));
            if (n > c.left() / min_elem)
                c.fail(at, "array of key '" + printable(key) + "' claims " + std::to_string(n) + " elements of " +
                               value_type_name(static_cast<ValueType>(et)) + ", more than the " +
                               std::to_string(c.left()) + " bytes left can hold");
            v.elem_type = static_cast<ValueType>(et);
            if (const size_t es = value_size(v.elem_type)) {
                // Numbers and bools: the file's bytes as they are (bounded by the file above).
                const size_t bytes = static_cast<size_t>(n) * es;
                c.need(bytes, "array elements", &key);
                v.raw.assign(c.here(), c.here() + bytes);
                if (v.elem_type == ValueType::kBool)
                    for (size_t k = 0; k < bytes; ++k)
                        if (v.raw[k] > 1)
                            c.fail(c.pos() + k, "bool value of key '" + printable(key) + "' is " +
                                                    std::to_string(v.raw[k]) + " (element " + std::to_string(k) +
                                                    "), expected 0 or 1");
                c.skip(bytes);
                break;
            }
            const uint64_t cost = v.elem_type == ValueType::kArray ? kNestedCost : 1;
            if (n > elements_left / cost)
                c.fail(at, "array of key '" + printable(key) + "' claims " + std::to_string(n) +
                               " elements, more than the metadata limit of " + std::to_string(kMaxMetadataElements) +
                               " string elements (or " + std::to_string(kMaxMetadataElements / kNestedCost) +
                               " nested arrays) in all: the file is corrupt");
            elements_left -= n * cost;
            if (v.elem_type == ValueType::kString) {
                v.strs.reserve(static_cast<size_t>(std::min(n, kMaxReserve)));
                for (uint64_t k = 0; k < n; ++k) v.strs.push_back(c.read_string("string value", &key));
            } else {
                v.nested.reserve(static_cast<size_t>(std::min(n, kMaxReserve)));
                for (uint64_t k = 0; k < n; ++k)
                    v.nested.push_back(read_value(c, v.elem_type, key, depth + 1, elements_left));
            }
            break;
        }
    }
    return v;
}

}  // namespace

GgufFile::~GgufFile() = default;

uint64_t GgufFile::file_size() const { return map_ ? map_->size() : source_->total_bytes(); }

std::shared_ptr<GgufFile> GgufFile::assemble(const std::string& path, std::vector<std::pair<std::string, Value>> metadata,
                                             std::vector<TensorInfo> tensors, std::shared_ptr<const TensorSource> source) {
    PIPELM_CHECK(source != nullptr, path, ": an assembled file needs a tensor source");
    std::shared_ptr<GgufFile> f(new GgufFile());
    f->path_ = path;
    f->version_ = 3;
    f->source_ = std::move(source);
    f->kv_ = std::move(metadata);
    for (size_t k = 0; k < f->kv_.size(); ++k)
        if (!f->kv_index_.emplace(f->kv_[k].first, k).second)
            PIPELM_THROW(ErrorCode::kFormat, path, ": duplicate metadata key '", f->kv_[k].first, "'");
    f->tensors_ = std::move(tensors);
    for (size_t k = 0; k < f->tensors_.size(); ++k)
        if (!f->tensor_index_.emplace(f->tensors_[k].name, k).second)
            PIPELM_THROW(ErrorCode::kFormat, path, ": duplicate tensor '", f->tensors_[k].name, "'");
    return f;
}

const uint8_t* GgufFile::data(const TensorInfo& t) const {
    if (t.data || t.bytes == 0) return t.data;
    PIPELM_CHECK(source_ != nullptr, path_, ": tensor '", t.name, "' has no data");
    return source_->map(t);
}

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
    std::shared_ptr<GgufFile> f(new GgufFile());
    f->path_ = path;
    f->map_ = std::make_unique<MappedFile>(path);
    f->parse();
    return f;
}

void GgufFile::parse() {
    Cursor c(path_, map_->data(), map_->size());
    if (map_->size() < 4)
        PIPELM_THROW(ErrorCode::kFormat, path_, ": not a GGUF file: only ", map_->size(),
                     " bytes (expected the magic 'GGUF' at offset 0)");
    const uint32_t magic = c.read<uint32_t>("magic");
    if (magic != 0x46554747u) {
        char m[5] = {0};
        std::memcpy(m, &magic, 4);
        for (char& ch : m)
            if (ch && (ch < 32 || ch > 126)) ch = '?';
        PIPELM_THROW(ErrorCode::kFormat, path_, ": not a GGUF file: magic at offset 0 is '", m,
                     "', expected 'GGUF'");
    }
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3)
        PIPELM_THROW(ErrorCode::kFormat, path_, ": unsupported GGUF version ", version_,
                     " at offset 4 (pipelm reads versions 2 and 3)");
    const size_t at_counts = c.pos();
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    // A tensor info is at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes;
    // a kv at least 8 (key len) + 4 (type) + 1 byte.
    if (n_tensors > c.left() / 24)
        c.fail(at_counts, "tensor count " + std::to_string(n_tensors) + " is more than the " + std::to_string(c.left()) +
                              " bytes left in the file can hold (24+ bytes each): the file is truncated or corrupt");
    if (n_kv > c.left() / 13)
        c.fail(at_counts + 8, "metadata count " + std::to_string(n_kv) + " is more than the " +
                                  std::to_string(c.left()) +
                                  " bytes left in the file can hold (13+ bytes each): the file is truncated or corrupt");

    kv_.reserve(static_cast<size_t>(std::min(n_kv, kMaxReserve)));
    uint64_t elements_left = kMaxMetadataElements;
    for (uint64_t k = 0; k < n_kv; ++k) {
        const size_t at = c.pos();
        std::string key = c.read_string("metadata key");
        const size_t at_type = c.pos();
        const uint32_t t = c.read<uint32_t>("metadata value type", &key);
        if (!valid_value_type(t))
            c.fail(at_type, "key '" + printable(key) + "' has unknown value type " + std::to_string(t) +
                                " (expected 0..12)");
        Value v = read_value(c, static_cast<ValueType>(t), key, 0, elements_left);
        if (kv_index_.count(key)) c.fail(at, "duplicate metadata key '" + printable(key) + "'");
        kv_index_[key] = kv_.size();
        kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const Value* a = find("general.alignment")) {
        if (a->type != ValueType::kU32)
            PIPELM_THROW(ErrorCode::kFormat, path_, ": general.alignment has type ", value_type_name(a->type),
                         ", expected u32");
        const uint64_t al = a->u;
        if (al == 0 || (al & (al - 1)) != 0)
            PIPELM_THROW(ErrorCode::kFormat, path_, ": general.alignment is ", al, ", expected a power of two");
        alignment_ = al;
    }

    tensors_.reserve(static_cast<size_t>(std::min(n_tensors, kMaxReserve)));
    for (uint64_t k = 0; k < n_tensors; ++k) {
        const size_t at = c.pos();
        TensorInfo ti;
        ti.name = c.read_string("tensor name");
        if (ti.name.size() >= kMaxNameBytes)
            c.fail(at, "tensor name '" + printable(ti.name) + "' is " + std::to_string(ti.name.size()) +
                           " bytes, longer than 63");
        const std::string name = printable(ti.name);  // for messages
        if (tensor_index_.count(ti.name)) c.fail(at, "duplicate tensor name '" + name + "'");
        const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
        if (n_dims == 0 || n_dims > kMaxDims)
            c.fail(at, "tensor '" + name + "' has " + std::to_string(n_dims) + " dimensions, expected 1..4");
        int64_t n_el = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = c.read<uint64_t>("tensor dimension");
            if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
                (ne != 0 && static_cast<uint64_t>(n_el) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne))
                c.fail(at, "tensor '" + name + "' has an element count that overflows 64 bits");
            ti.ne.push_back(static_cast<int64_t>(ne));
            n_el *= static_cast<int64_t>(ne);
        }
        const size_t at_type = c.pos();
        const uint32_t type = c.read<uint32_t>("tensor type");
        const GgmlTypeInfo& info = ggml_type_info(type);
        if (!info.known)
            c.fail(at_type, "tensor '" + name + "' has unknown ggml type " + std::to_string(type));
        ti.type = static_cast<GgmlType>(type);
        if (ti.ne[0] % info.block != 0)
            c.fail(at, "tensor '" + name + "' of type " + info.name + " has " + std::to_string(ti.ne[0]) +
                           " elements per row, not a multiple of the block size " + std::to_string(info.block));
        const uint64_t rows = ti.ne[0] == 0 ? 0 : static_cast<uint64_t>(n_el / ti.ne[0]);
        const uint64_t row_blocks = static_cast<uint64_t>(ti.ne[0] / info.block);
        if (row_blocks > std::numeric_limits<uint64_t>::max() / info.block_bytes)
            c.fail(at, "tensor '" + name + "' row byte size overflows 64 bits");
        const uint64_t row_bytes = row_blocks * info.block_bytes;
        if (rows != 0 && row_bytes > std::numeric_limits<uint64_t>::max() / rows)
            c.fail(at, "tensor '" + name + "' byte size overflows 64 bits");
        ti.bytes = row_bytes * rows;
        const size_t at_off = c.pos();
        ti.offset = c.read<uint64_t>("tensor data offset");
        if (ti.offset % alignment_ != 0)
            c.fail(at_off, "tensor '" + name + "' data offset " + std::to_string(ti.offset) +
                               " is not a multiple of the alignment " + std::to_string(alignment_));
        tensor_index_[ti.name] = tensors_.size();
        tensors_.push_back(std::move(ti));
    }

    const uint64_t end_of_infos = c.pos();
    data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
    const uint64_t fsize = map_->size();
    if (n_tensors > 0 && data_offset_ > fsize)
        PIPELM_THROW(ErrorCode::kFormat, path_, ": truncated: tensor data would start at offset ", data_offset_,
                     " but the file has ", fsize, " bytes: the file is incomplete; download it again");
    // Bounds and overlaps of tensor data.
    std::vector<const TensorInfo*> by_off;
    for (auto& t : tensors_) {
        const uint64_t avail = fsize >= data_offset_ ? fsize - data_offset_ : 0;
        if (t.offset > avail || t.bytes > avail - t.offset)
            PIPELM_THROW(ErrorCode::kFormat, path_, ": tensor '", printable(t.name), "' data (", t.bytes,
                         " bytes at offset ", t.offset, " of the data section, which starts at offset ", data_offset_,
                         ") runs past the end of the file (", fsize, " bytes): the file is truncated; download it again");
        t.data = map_->data() + data_offset_ + t.offset;
        by_off.push_back(&t);
    }
    std::sort(by_off.begin(), by_off.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    // Compare each tensor with the one reaching furthest among those before it (not just its
    // neighbour: an empty tensor between two overlapping ones must not hide the overlap).
    const TensorInfo* p = nullptr;
    for (const TensorInfo* q : by_off) {
        if (q->bytes == 0) continue;
        if (p && p->offset + p->bytes > q->offset)
            PIPELM_THROW(ErrorCode::kFormat, path_, ": tensors '", printable(p->name), "' [", p->offset, ", ",
                         p->offset + p->bytes, ") and '", printable(q->name), "' [", q->offset, ", ",
                         q->offset + q->bytes, ") overlap in the data section");
        if (!p || q->offset + q->bytes > p->offset + p->bytes) p = q;
    }
}

const Value* GgufFile::find(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const Value& GgufFile::get(const std::string& key) const {
    const Value* v = find(key);
    if (!v) PIPELM_THROW(ErrorCode::kFormat, path_, ": missing metadata key '", key, "'");
    return *v;
}

std::string GgufFile::get_string(const std::string& key) const {
    const Value& v = get(key);
    if (v.type != ValueType::kString)
        PIPELM_THROW(ErrorCode::kFormat, path_, ": key '", key, "' has type ", value_type_name(v.type), ", expected string");
    return v.s;
}

int64_t GgufFile::get_int(const std::string& key) const {
    const Value& v = get(key);
    if (!v.is_integer())
        PIPELM_THROW(ErrorCode::kFormat, path_, ": key '", key, "' has type ", value_type_name(v.type), ", expected an integer");
    return v.as_int();
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
    return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(const std::string& key) const {
    const Value& v = get(key);
    if (v.type == ValueType::kString || v.type == ValueType::kArray)
        PIPELM_THROW(ErrorCode::kFormat, path_, ": key '", key, "' has type ", value_type_name(v.type), ", expected a number");
    return v.as_float();
}

double GgufFile::get_float(const std::string& key, double fallback) const {
    return has(key) ? get_float(key) : fallback;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
    const Value& v = get(key);
    if (v.type != ValueType::kArray || v.elem_type != ValueType::kString)
        PIPELM_THROW(ErrorCode::kFormat, path_, ": key '", key, "' is not an array of strings");
    return v.strs;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
    const Value& v = get(key);
    if (v.type != ValueType::kArray)
        PIPELM_THROW(ErrorCode::kFormat, path_, ": key '", key, "' is not an array");
    Value probe;
    probe.type = v.elem_type;
    if (!probe.is_integer())
        PIPELM_THROW(ErrorCode::kFormat, path_, ": key '", key, "' is not an array of integers");
    std::vector<int64_t> out(v.size());
    for (size_t k = 0; k < out.size(); ++k) out[k] = v.at(k).as_int();
    return out;
}

const TensorInfo* GgufFile::find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& GgufFile::tensor(const std::string& name) const {
    const TensorInfo* t = find_tensor(name);
    if (!t) PIPELM_THROW(ErrorCode::kFormat, path_, ": missing tensor '", name, "'");
    return *t;
}

void GgufFile::advise_willneed(const TensorInfo& t) const {
    if (!map_) return;  // an assembled file's source maps exactly the tensor on use
    map_->advise_willneed(static_cast<size_t>(data_offset_ + t.offset), static_cast<size_t>(t.bytes));
}

void GgufFile::advise_dontneed(const TensorInfo& t) const {
    if (!map_) {
        source_->release(t);
        return;
    }
    map_->advise_dontneed(static_cast<size_t>(data_offset_ + t.offset), static_cast<size_t>(t.bytes));
}

void GgufFile::advise_dontneed(const TensorInfo& t, uint64_t begin, uint64_t bytes) const {
    if (!map_ || begin >= t.bytes) return;
    map_->advise_dontneed(static_cast<size_t>(data_offset_ + t.offset + begin),
                          static_cast<size_t>(std::min(bytes, t.bytes - begin)));
}

}  // namespace pipelm::gguf
