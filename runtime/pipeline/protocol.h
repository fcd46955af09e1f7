// Messages between pipeline stages (runtime level). Control parts are cereal-encoded
// (portable binary) and versioned; bulk data (hidden states, logits) travels as payload.
// Received control parts are decoded by BoundedInputArchive: no length a peer writes makes us
// allocate more than the message holds.
#pragma once
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include "runtime/base/error.h"
#include "runtime/sampling/sampler.h"
#include "transport/link.h"

namespace pipelm::pipeline {

constexpr uint32_t kProtocolVersion = 2;  // 2: start_us in ubatch and result headers

enum Tag : uint32_t {
    kHello = 1,     // coordinator -> every stage, along the pipe; last stage acks on the ring
    kHelloAck = 2,
    kSeqStart = 3,  // a sequence slot starts: sampler parameters for the last stage
    kUbatch = 4,    // hidden states of a ubatch
    kResult = 5,    // last stage -> stage 0: sampled ids and/or logits
    kSeqResume = 6, // after a recovery: a sequence's sampler as it was after `draws` samples
};

enum class Wire : uint8_t { kF32 = 0, kBF16 = 1 };
const char* wire_name(Wire w);
Wire parse_wire(const std::string& s);

struct LayerRange {
    int32_t first = 0, last = 0;
    template <class A>
    void serialize(A& ar) { ar(first, last); }
};

struct Hello {
    uint32_t version = kProtocolVersion;
    std::string model_id;    // hex hash of metadata + tensor table
    std::string model_name;  // file name, for messages
    std::vector<LayerRange> plan;
    template <class A>
    void serialize(A& ar) { ar(version, model_id, model_name, plan); }
};

struct HelloAck {
    int32_t stage = 0;
    std::string note;
    template <class A>
    void serialize(A& ar) { ar(stage, note); }
};

struct SeqStart {
    int32_t slot = 0;
    sampling::SamplerParams sampler;
    std::vector<int32_t> history;  // prompt tokens (repetition penalty)
    template <class A>
    void serialize(A& ar) { ar(slot, sampler, history); }
};

// Sent to a re-formed pipeline (runtime/pipeline/engine_recovery.cc) for every live sequence:
// the last stage rebuilds the sampler from `start` (whose history then holds the prompt and every
// token sampled so far) and advances its generator by `draws` samples, so that the next sample
// is the one the lost pipeline would have drawn. `draws` is bounded by the stage's context.
struct SeqResume {
    SeqStart start;
    uint64_t draws = 0;
    template <class A>
    void serialize(A& ar) { ar(start, draws); }
};

struct UbatchHeader {
    uint64_t id = 0;
    std::vector<int32_t> seq;       // slot of each token
    std::vector<int32_t> pos;       // position of each token
    std::vector<int32_t> out_rows;  // tokens whose output the coordinator wants
    uint8_t sample = 0;             // last stage samples one id per out row
    uint8_t want_logits = 0;        // last stage returns the logits of the out rows
    uint8_t wire = 0;               // Wire of the payload
    std::vector<double> busy_s;     // compute seconds of each stage so far (for statistics)
    std::vector<int64_t> start_us;  // wall-clock compute start of each stage so far (--trace; trace.h)
    template <class A>
    void serialize(A& ar) { ar(id, seq, pos, out_rows, sample, want_logits, wire, busy_s, start_us); }
};

struct ResultHeader {
    uint64_t id = 0;
    std::vector<int32_t> seq;     // slot of each out row
    std::vector<int32_t> tokens;  // sampled ids (when sampled)
    int32_t n_logit_rows = 0;     // payload: [n_logit_rows][n_vocab] f32
    std::vector<double> busy_s;   // compute seconds of each stage for this ubatch
    std::vector<int64_t> start_us;  // wall-clock compute start of each stage (µs, system_clock)
    template <class A>
    void serialize(A& ar) { ar(id, seq, tokens, n_logit_rows, busy_s, start_us); }
};

template <class T>
std::string encode(const T& v) {
    std::ostringstream os(std::ios::binary);
    {
        cereal::PortableBinaryOutputArchive ar(os);
        ar(v);
    }
    return os.str();
}

// Reads what PortableBinaryOutputArchive wrote, from bytes a peer sent: every read is bounded
// by the bytes left, and every container length (cereal's size tag, read before the container
// is allocated) must fit in them, since each element takes at least one byte. So a 63-byte
// message that claims a 4 GiB string fails at once instead of allocating 4 GiB.
class BoundedInputArchive : public cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision> {
public:
    explicit BoundedInputArchive(const std::string& bytes)
        : cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision>(this), bytes_(bytes) {
        uint8_t little = 0;
        load_binary(&little, 1, 1);
        if (little > 1) throw cereal::Exception("bad endianness byte");
        swap_ = (little == 1) != is_little_endian();
    }

    // `size` bytes of elements of `elem` bytes each, byte-swapped if the writer's order differs.
    void load_binary(void* data, size_t size, size_t elem) {
        if (size > left())
            throw cereal::Exception("needs " + std::to_string(size) + " bytes at offset " + std::to_string(pos_) +
                                    ", the message has " + std::to_string(bytes_.size()));
        if (size == 0) return;  // an empty container's data() may be null
        std::memcpy(data, bytes_.data() + pos_, size);
        pos_ += size;
        if (swap_ && elem > 1)
            for (size_t i = 0; i + elem <= size; i += elem) {
                auto* p = static_cast<uint8_t*>(data) + i;
                for (size_t a = 0, b = elem - 1; a < b; ++a, --b) std::swap(p[a], p[b]);
            }
    }

    void check_length(uint64_t n) const {
        if (n > left())
            throw cereal::Exception("a length of " + std::to_string(n) + " at offset " + std::to_string(pos_) +
                                    " exceeds the " + std::to_string(left()) + " bytes left");
    }

    size_t left() const { return bytes_.size() - pos_; }

private:
    static bool is_little_endian() {
        const uint16_t one = 1;
        uint8_t first = 0;
        std::memcpy(&first, &one, 1);
        return first == 1;
    }
    const std::string& bytes_;
    size_t pos_ = 0;
    bool swap_ = false;
};

template <class T>
std::enable_if_t<std::is_arithmetic<T>::value> CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, T& t) {
    ar.load_binary(std::addressof(t), sizeof t, sizeof t);
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::SizeTag<T>& t) {
    ar(t.size);
    ar.check_length(static_cast<uint64_t>(t.size));
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::BinaryData<T>& bd) {
    using Elem = std::remove_pointer_t<T>;
    ar.load_binary(bd.data, static_cast<size_t>(bd.size), sizeof(Elem));
}

template <class T>
T decode(const std::string& bytes, const char* what) {
    T v;
    try {
        BoundedInputArchive ar(bytes);
        ar(v);
        if (ar.left() != 0) throw cereal::Exception(std::to_string(ar.left()) + " unexpected trailing bytes");
    } catch (const std::exception& e) {
        PIPELM_THROW(ErrorCode::kProtocol, "malformed ", what, " message (", bytes.size(), " bytes): ", e.what());
    }
    return v;
}

template <class T>
transport::Message make_message(Tag tag, const T& header, std::vector<uint8_t> payload = {}) {
    transport::Message m;
    m.kind = transport::MsgKind::kData;
    m.tag = tag;
    m.control = encode(header);
    m.payload = std::move(payload);
    return m;
}

// Hidden states <-> payload bytes.
std::vector<uint8_t> pack_hidden(const float* x, int64_t n, Wire w);
void unpack_hidden(const std::vector<uint8_t>& bytes, float* x, int64_t n, Wire w);

}  // namespace pipelm::pipeline

// Types without a load of their own (load_minimal, e.g. enums) pair an input archive with its
// output archive.
namespace cereal::traits::detail {
template <>
struct get_output_from_input<pipelm::pipeline::BoundedInputArchive> {
    using type = cereal::PortableBinaryOutputArchive;
};
}  // namespace cereal::traits::detail
