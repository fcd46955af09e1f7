#include "runtime/gguf/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "runtime/base/error.h"

namespace pipelm::gguf {
namespace {

struct FileCloser {
    void operator()(std::FILE* f) const {
        if (f) std::fclose(f);
    }
};

class Out {
public:
    Out(std::FILE* f, const std::string& path) : f_(f), path_(path) {}
    void bytes(const void* p, size_t n) {
        if (n && std::fwrite(p, 1, n, f_) != n)
            PIPELM_THROW(ErrorCode::kIo, path_, ": write failed: ", std::strerror(errno));
        pos_ += n;
    }
    template <typename T>
    void pod(T v) { bytes(&v, sizeof(T)); }
    void str(const std::string& s) {
        pod<uint64_t>(s.size());
        bytes(s.data(), s.size());
    }
    void pad_to(uint64_t align) {
        static const uint8_t zeros[256] = {0};
        uint64_t n = (align - pos_ % align) % align;
        while (n) {
            const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof(zeros)));
            bytes(zeros, k);
            n -= k;
        }
    }
    uint64_t pos() const { return pos_; }

private:
    std::FILE* f_;
    const std::string& path_;
    uint64_t pos_ = 0;
};

void write_value(Out& o, const Value& v) {
    switch (v.type) {
        case ValueType::kU8: o.pod<uint8_t>(static_cast<uint8_t>(v.u)); break;
        case ValueType::kI8: o.pod<int8_t>(static_cast<int8_t>(v.i)); break;
        case ValueType::kU16: o.pod<uint16_t>(static_cast<uint16_t>(v.u)); break;
        case ValueType::kI16: o.pod<int16_t>(static_cast<int16_t>(v.i)); break;
        case ValueType::kU32: o.pod<uint32_t>(static_cast<uint32_t>(v.u)); break;
        case ValueType::kI32: o.pod<int32_t>(static_cast<int32_t>(v.i)); break;
        case ValueType::kU64: o.pod<uint64_t>(v.u); break;
        case ValueType::kI64: o.pod<int64_t>(v.i); break;
        case ValueType::kF32: o.pod<float>(static_cast<float>(v.f)); break;
        case ValueType::kF64: o.pod<double>(v.f); break;
        case ValueType::kBool: o.pod<uint8_t>(v.u ? 1 : 0); break;
        case ValueType::kString: o.str(v.s); break;
        case ValueType::kArray:
            o.pod<uint32_t>(static_cast<uint32_t>(v.elem_type));
            o.pod<uint64_t>(v.size());
            if (v.elem_type == ValueType::kString)
                for (const std::string& e : v.strs) o.str(e);
            else
                for (size_t k = 0; k < v.size(); ++k) write_value(o, v.at(k));
            break;
    }
}

}  // namespace

Value GgufWriter::make_string(const std::string& s) {
    Value v;
    v.type = ValueType::kString;
    v.s = s;
    return v;
}

void GgufWriter::set(const std::string& key, Value v) {
    if (key == "general.alignment") {
        // write() emits this key from alignment_ (and pads by it): storing it here as well would
        // write it twice, or a value that disagrees with the padding.
        PIPELM_CHECK(v.type == ValueType::kU32 && v.u != 0 && (v.u & (v.u - 1)) == 0 && v.u <= 0xffffffffu,
                     "general.alignment must be a u32 power of two");
        alignment_ = static_cast<uint32_t>(v.u);
        return;
    }
    for (auto& kv : kv_)
        if (kv.first == key) {
            kv.second = std::move(v);
            return;
        }
    kv_.emplace_back(key, std::move(v));
}

void GgufWriter::set_u32(const std::string& key, uint32_t x) {
    Value v;
    v.type = ValueType::kU32;
    v.u = x;
    set(key, v);
}
void GgufWriter::set_i32(const std::string& key, int32_t x) {
    Value v;
    v.type = ValueType::kI32;
    v.i = x;
    set(key, v);
}
void GgufWriter::set_f32(const std::string& key, float x) {
    Value v;
    v.type = ValueType::kF32;
    v.f = x;
    set(key, v);
}
void GgufWriter::set_bool(const std::string& key, bool x) {
    Value v;
    v.type = ValueType::kBool;
    v.u = x ? 1 : 0;
    set(key, v);
}
void GgufWriter::set_string(const std::string& key, const std::string& x) { set(key, make_string(x)); }
void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& xs) {
    Value v;
    v.type = ValueType::kArray;
    v.elem_type = ValueType::kString;
    v.strs = xs;
    set(key, std::move(v));
}
void GgufWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& xs) {
    Value v;
    v.type = ValueType::kArray;
    v.elem_type = ValueType::kI32;
    for (int32_t x : xs) {
        Value e;
        e.type = ValueType::kI32;
        e.i = x;
        v.push_back(e);
    }
    set(key, std::move(v));
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne, Fill fill) {
    const auto& ti = ggml_type_info(type);
    PIPELM_CHECK(!ne.empty() && ne.size() <= 4, "tensor '", name, "': 1..4 dimensions");
    PIPELM_CHECK(ne[0] % ti.block == 0, "tensor '", name, "': ", ne[0], " elements per row is not a multiple of ",
                 ti.block, " (type ", ti.name, ")");
    for (const auto& t : tensors_) PIPELM_CHECK(t.name != name, "duplicate tensor '", name, "'");
    uint64_t rows = 1;
    for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
    tensors_.push_back({name, type, ne, ggml_row_bytes(type, ne[0]) * rows, std::move(fill)});
}

void GgufWriter::write(const std::string& path, uint32_t version) const {
    PIPELM_CHECK(alignment_ != 0 && (alignment_ & (alignment_ - 1)) == 0, "GGUF alignment ", alignment_,
                 " is not a power of two");
    const std::string tmp = path + ".tmp";
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(tmp.c_str(), "wb"));
    if (!f) PIPELM_THROW(ErrorCode::kIo, tmp, ": cannot create: ", std::strerror(errno));
    // On any failure (a full disk, a fill callback that throws) the partial .tmp file is removed.
    try {
        Out o(f.get(), tmp);
        o.pod<uint32_t>(0x46554747u);
        o.pod<uint32_t>(version);
        o.pod<uint64_t>(tensors_.size());
        const bool has_align = alignment_ != 32;
        o.pod<uint64_t>(kv_.size() + (has_align ? 1 : 0));
        if (has_align) {
            o.str("general.alignment");
            o.pod<uint32_t>(static_cast<uint32_t>(ValueType::kU32));
            o.pod<uint32_t>(alignment_);
        }
        for (const auto& kv : kv_) {
            o.str(kv.first);
            o.pod<uint32_t>(static_cast<uint32_t>(kv.second.type));
            write_value(o, kv.second);
        }
        uint64_t off = 0;
        for (const auto& t : tensors_) {
            o.str(t.name);
            o.pod<uint32_t>(static_cast<uint32_t>(t.ne.size()));
            for (int64_t d : t.ne) o.pod<uint64_t>(static_cast<uint64_t>(d));
            o.pod<uint32_t>(static_cast<uint32_t>(t.type));
            o.pod<uint64_t>(off);
            off += (t.bytes + alignment_ - 1) / alignment_ * alignment_;
        }
        o.pad_to(alignment_);
        std::vector<uint8_t> buf;
        for (const auto& t : tensors_) {
            buf.assign(static_cast<size_t>(t.bytes), 0);
            if (t.fill) t.fill(buf.data());
            o.bytes(buf.data(), buf.size());
            o.pad_to(alignment_);
        }
        if (std::fflush(f.get()) != 0 || std::ferror(f.get()))
            PIPELM_THROW(ErrorCode::kIo, tmp, ": write failed: ", std::strerror(errno));
        if (std::fclose(f.release()) != 0) PIPELM_THROW(ErrorCode::kIo, tmp, ": write failed: ", std::strerror(errno));
    } catch (...) {
        f.reset();
        std::remove(tmp.c_str());
        throw;
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        std::remove(tmp.c_str());
        PIPELM_THROW(ErrorCode::kIo, path, ": cannot rename from ", tmp, ": ", std::strerror(e));
    }
}

}  // namespace pipelm::gguf
