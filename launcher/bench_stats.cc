// Statistics of `pipelm bench`: mean and sample standard deviation of the repetitions, and
// percentiles of the latency samples (TTFT, inter-token).
#include <algorithm>
#include <cmath>

#include "launcher/bench.h"

namespace pipelm::launcher::bench {

MeanSd mean_sd(const std::vector<double>& v) {
    MeanSd m;
    if (v.empty()) return m;
    for (double x : v) m.mean += x;
    m.mean /= static_cast<double>(v.size());
    if (v.size() > 1) {
        double ss = 0;
        for (double x : v) ss += (x - m.mean) * (x - m.mean);
        m.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));
    }
    return m;
}
double percentile(std::vector<double> v, double p) {
    if (v.empty()) return std::nan("");
    std::sort(v.begin(), v.end());
    const double idx = p * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(idx), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

}  // namespace pipelm::launcher::bench
