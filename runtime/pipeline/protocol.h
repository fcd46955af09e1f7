// Messages between pipeline stages (runtime level). Control parts are cereal-encoded
// (portable binary) and versioned; bulk data (hidden states, logits) travels as payload.
#pragma once
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include "runtime/base/error.h"
#include "runtime/sampling/sampler.h"
#include "transport/link.h"

namespace pipelm::pipeline {

constexpr uint32_t kProtocolVersion = 1;

enum Tag : uint32_t {
    kHello = 1,     // coordinator -> every stage, along the pipe; last stage acks on the ring
    kHelloAck = 2,
    kSeqStart = 3,  // a sequence slot starts: sampler parameters for the last stage
    kUbatch = 4,    // hidden states of a ubatch
    kResult = 5,    // last stage -> stage 0: sampled ids and/or logits
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

struct UbatchHeader {
    uint64_t id = 0;
    std::vector<int32_t> seq;       // slot of each token
    std::vector<int32_t> pos;       // position of each token
    std::vector<int32_t> out_rows;  // tokens whose output the coordinator wants
    uint8_t sample = 0;             // last stage samples one id per out row
    uint8_t want_logits = 0;        // last stage returns the logits of the out rows
    uint8_t wire = 0;               // Wire of the payload
    std::vector<double> busy_s;     // compute seconds of each stage so far (for statistics)
    template <class A>
    void serialize(A& ar) { ar(id, seq, pos, out_rows, sample, want_logits, wire, busy_s); }
};

struct ResultHeader {
    uint64_t id = 0;
    std::vector<int32_t> seq;     // slot of each out row
    std::vector<int32_t> tokens;  // sampled ids (when sampled)
    int32_t n_logit_rows = 0;     // payload: [n_logit_rows][n_vocab] f32
    std::vector<double> busy_s;   // compute seconds of each stage for this ubatch
    template <class A>
    void serialize(A& ar) { ar(id, seq, tokens, n_logit_rows, busy_s); }
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

template <class T>
T decode(const std::string& bytes, const char* what) {
    T v;
    try {
        std::istringstream is(bytes, std::ios::binary);
        cereal::PortableBinaryInputArchive ar(is);
        ar(v);
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
