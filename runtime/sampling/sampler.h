// Token sampling on the last stage: greedy, temperature, top-k, top-p, min-p, repetition
// penalty; deterministic for a given seed (own xoshiro256** generator, not std distributions,
// so results do not depend on the standard library).
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

namespace pipelm::sampling {

struct SamplerParams {
    float temperature = 0.8f;  // <= 0: greedy
    int top_k = 40;            // <= 0: off
    float top_p = 0.95f;       // >= 1: off
    float min_p = 0.05f;       // <= 0: off
    float repeat_penalty = 1.0f;  // 1: off
    int repeat_last_n = 64;
    uint64_t seed = 0;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed);
    }
};

class Rng {
public:
    explicit Rng(uint64_t seed);
    uint64_t next();
    double uniform();  // [0, 1)

private:
    uint64_t s_[4];
};

class Sampler {
public:
    explicit Sampler(const SamplerParams& p = {});
    // Records tokens for the repetition penalty (prompt and generated).
    void accept(int32_t token);
    // Picks the next token from logits[0..n_vocab). Does not call accept().
    int32_t sample(const float* logits, int n_vocab);
    const SamplerParams& params() const { return p_; }

private:
    SamplerParams p_;
    Rng rng_;
    std::deque<int32_t> recent_;
    std::vector<std::pair<float, int32_t>> cand_;
};

// Index of the largest value (first one on ties).
int32_t argmax(const float* x, int n);

}  // namespace pipelm::sampling
