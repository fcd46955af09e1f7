#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace pipelm::sampling {

namespace {
uint64_t splitmix(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : s_) s = splitmix(x);
}

uint64_t Rng::next() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

int32_t argmax(const float* x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; ++i)
        if (x[i] > x[best]) best = i;
    return best;
}

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {}

void Sampler::accept(int32_t token) {
    if (p_.repeat_last_n <= 0) return;
    recent_.push_back(token);
    while (static_cast<int>(recent_.size()) > p_.repeat_last_n) recent_.pop_front();
}

int32_t Sampler::sample(const float* logits, int n_vocab) {
    cand_.resize(n_vocab);
    for (int i = 0; i < n_vocab; ++i) cand_[i] = {logits[i], i};
    if (p_.repeat_penalty != 1.0f && !recent_.empty()) {
        std::unordered_set<int32_t> seen(recent_.begin(), recent_.end());
        for (int32_t t : seen) {
            if (t < 0 || t >= n_vocab) continue;
            float& l = cand_[t].first;
            l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
        }
    }
    if (p_.temperature <= 0.f) {
        int32_t best = 0;
        for (int i = 1; i < n_vocab; ++i)
            if (cand_[i].first > cand_[best].first) best = i;
        return best;
    }
    auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    size_t n = cand_.size();
    if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
        std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
        n = p_.top_k;
    } else {
        std::sort(cand_.begin(), cand_.end(), by_logit);
    }
    // Softmax with temperature over the kept candidates (sorted, largest first).
    std::vector<double> prob(n);
    const double mx = cand_[0].first;
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
        prob[i] = std::exp((cand_[i].first - mx) / p_.temperature);
        sum += prob[i];
    }
    for (auto& p : prob) p /= sum;
    if (p_.min_p > 0.f) {
        const double thr = prob[0] * p_.min_p;
        size_t keep = 1;
        while (keep < n && prob[keep] >= thr) ++keep;
        n = keep;
    }
    if (p_.top_p < 1.f) {
        double cum = 0;
        size_t keep = 0;
        while (keep < n) {
            cum += prob[keep++];
            if (cum >= p_.top_p) break;
        }
        n = std::max<size_t>(1, keep);
    }
    double total = 0;
    for (size_t i = 0; i < n; ++i) total += prob[i];
    double r = rng_.uniform() * total;
    for (size_t i = 0; i < n; ++i) {
        r -= prob[i];
        if (r < 0) return cand_[i].second;
    }
    return cand_[n - 1].second;
}

}  // namespace pipelm::sampling
