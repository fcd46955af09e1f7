// Discrete-event pipeline model of simulator.h. One Pipe holds the clock of the coordinator
// (stage 0) and the time each later stage and each link is next free.
#include "runtime/pipeline/simulator.h"

#include <algorithm>
#include <deque>
#include <map>

namespace pipelm::pipeline {
namespace {

class Pipe {
public:
    // in_flight: the most ubatches the workload keeps in the pipe at once (how many of a host's
    // stages can compute together).
    Pipe(const SimModel& m, int in_flight)
        : m_(m),
          S_(static_cast<int>(m.share.size())),
          stage_free_(S_, 0.0),
          link_free_(S_, 0.0),
          bucket_(S_, m.link_burst_bytes),
          bucket_t_(S_, 0.0),
          busy_(S_, 0.0),
          host_(S_, 0.0),
          cpu_(S_, 1.0),
          mem_(S_, 1.0) {
        const bool shared = static_cast<int>(m.host.size()) == S_;
        for (int s = 0; s < S_; ++s) {
            int on_host = 1;
            if (shared) on_host = static_cast<int>(std::count(m.host.begin(), m.host.end(), m.host[s]));
            const double c = std::max(1, std::min(on_host, in_flight));
            if (m.host_cores > 0) cpu_[s] = std::max(1.0, c * std::max(1, m.threads_per_stage) / m.host_cores);
            if (m.host_read_Bps > 0 && m.stage_read_Bps > 0) mem_[s] = std::max(1.0, c * m.stage_read_Bps / m.host_read_Bps);
        }
    }

    // Submits a ubatch of n tokens at the coordinator's time. With 1 stage it computes now, on
    // the coordinator's thread; with more, stage 0's thread computes it when it is free and sends
    // it down the pipe, and the coordinator goes on at once.
    void submit(int64_t n) {
        const int64_t bytes = n * m_.bytes_per_token + m_.header_bytes;
        if (S_ == 1) {
            t_ += compute(0, n);
            results_.push_back(t_);
            return;
        }
        stage_free_[0] = std::max(t_, stage_free_[0]) + compute(0, n);
        double ready = stage_free_[0];
        stage_free_[0] += give_out(0, bytes);
        for (int s = 1; s < S_; ++s) {
            const double arrive = send(s - 1, ready, bytes);
            const double start = std::max(arrive, stage_free_[s]);
            stage_free_[s] = start + take_in(s) + compute(s, n);
            ready = stage_free_[s];
            stage_free_[s] += give_out(s, s + 1 < S_ ? bytes : m_.result_bytes);
        }
        results_.push_back(send(S_ - 1, ready, m_.result_bytes));
    }
    // Waits for the oldest result; returns the time it was in (the coordinator's host time to
    // take it in, msg_cpu_s, is charged to stage 0 but delays only the coordinator).
    double next() {
        t_ = std::max(t_, results_.front());
        if (S_ > 1) t_ += take_in(0);
        results_.pop_front();
        return t_;
    }
    int in_flight() const { return static_cast<int>(results_.size()); }
    int stages() const { return S_; }
    // The end of the run: the last result is in and stage 0's thread is done.
    double now() const { return std::max(t_, stage_free_[0]); }
    const std::vector<double>& busy() const { return busy_; }
    const std::vector<double>& host() const { return host_; }

private:
    double compute(int s, int64_t n) {
        double pass = m_.pass_s, token = m_.token_s;
        if (!m_.segments.empty()) {  // the first segment that reaches n, else the last
            size_t i = 0;
            while (i + 1 < m_.segments.size() && n > m_.segments[i].upto) ++i;
            pass = m_.segments[i].pass_s;
            token = m_.segments[i].token_s;
        }
        const double c = m_.share[s] * (pass * std::max(mem_[s], cpu_[s]) + token * static_cast<double>(n) * cpu_[s]);
        busy_[s] += c;
        return c;
    }
    // Stage s's host time to take in one message (SimModel::msg_cpu_s), slowed as its compute is.
    double take_in(int s) {
        const double c = m_.msg_cpu_s * cpu_[s];
        busy_[s] += c;
        host_[s] += c;
        return c;
    }
    // Stage s's host time to send `bytes` (SimModel::byte_cpu_s): after the message has left, at
    // full speed.
    double give_out(int s, int64_t bytes) {
        const double c = m_.byte_cpu_s * static_cast<double>(bytes);
        busy_[s] += c;
        host_[s] += c;
        return c;
    }
    // Link l (stage l -> l+1, the last one back to stage 0) carries `bytes` sent at time t.
    // With a token bucket, what it holds passes at once and the rest at the rate.
    double send(int l, double t, int64_t bytes) {
        const double start = std::max(t, link_free_[l]);
        double end = start;
        if (m_.link_bps > 0) {
            const double rate = m_.link_bps / 8.0;  // bytes per second
            double level = std::min(m_.link_burst_bytes, bucket_[l] + (start - bucket_t_[l]) * rate);
            const double b = static_cast<double>(bytes) * m_.wire_per_byte;
            if (b <= level) {
                level -= b;
            } else {
                end = start + (b - level) / rate;
                level = 0;
            }
            bucket_[l] = level;
            bucket_t_[l] = end;
        }
        link_free_[l] = end;
        return end + m_.link_latency_s;
    }

    const SimModel& m_;
    int S_;
    double t_ = 0;
    std::vector<double> stage_free_, link_free_;
    std::vector<double> bucket_, bucket_t_;  // per link: bytes in the token bucket, as of this time
    std::vector<double> busy_, host_;  // per stage: compute + host time for messages, the latter alone
    std::vector<double> cpu_, mem_;  // per stage: slow-downs from sharing the host's cores, its bandwidth
    std::deque<double> results_;
};

}  // namespace

SimResult simulate_prompt(const SimModel& m, int prompt, int ubatch) {
    Pipe p(m, std::min(static_cast<int>(m.share.size()), (prompt + ubatch - 1) / std::max(ubatch, 1)));
    for (int c0 = 0; c0 < prompt; c0 += ubatch) {
        p.submit(std::min(ubatch, prompt - c0));
        while (p.in_flight() > p.stages()) p.next();  // as Engine::prefill_logits
    }
    while (p.in_flight() > 0) p.next();
    SimResult r;
    r.seconds = p.now();
    r.tokens = prompt;
    r.busy_s = p.busy();
    r.host_s = p.host();
    r.ttft = {p.now()};
    return r;
}

SimResult simulate_decode(const SimModel& m, int sequences, int n_gen, int seq_prompt, int ubatch) {
    const int G = std::min(static_cast<int>(m.share.size()), sequences);
    Pipe p(m, G);
    struct Group {
        int size = 0, step = 0, pending = 0;
    };
    std::vector<Group> groups(G);
    for (int g = 0; g < G; ++g) groups[g].size = (g + 1) * sequences / G - g * sequences / G;
    std::deque<std::pair<int, bool>> fifo;  // group of each ubatch in flight, and whether it yields tokens
    auto submit_step = [&](int g) {
        Group& gr = groups[g];
        const int64_t n = gr.step == 0 ? int64_t(gr.size) * seq_prompt : gr.size;
        const int64_t chunk = gr.step == 0 ? ubatch : n;
        for (int64_t c0 = 0; c0 < n; c0 += chunk) {
            p.submit(std::min(chunk, n - c0));
            fifo.push_back({g, c0 + chunk >= n});
            ++gr.pending;
        }
        ++gr.step;
    };
    SimResult r;
    std::vector<double> last(G, -1);
    for (int g = 0; g < G; ++g) submit_step(g);
    while (p.in_flight() > 0) {
        const double t = p.next();
        const auto [g, yields] = fifo.front();
        fifo.pop_front();
        Group& gr = groups[g];
        if (yields) {
            for (int i = 0; i < gr.size; ++i) (last[g] < 0 ? r.ttft : r.itl).push_back(last[g] < 0 ? t : t - last[g]);
            last[g] = t;
            r.tokens += gr.size;
        }
        if (--gr.pending == 0 && gr.step < n_gen) submit_step(g);
    }
    r.seconds = p.now();
    r.busy_s = p.busy();
    r.host_s = p.host();
    return r;
}

bool fit_compute(const std::vector<std::pair<int, double>>& points, double& pass_s, double& token_s) {
    double sn = 0, st = 0, snn = 0, snt = 0;
    const double k = static_cast<double>(points.size());
    for (const auto& [n, t] : points) sn += n, st += t, snn += double(n) * n, snt += n * t;
    const double det = k * snn - sn * sn;
    if (points.size() < 2 || det <= 1e-12) return false;
    token_s = (k * snt - sn * st) / det;
    pass_s = (st - token_s * sn) / k;
    return token_s >= 0 && pass_s >= 0;
}

std::vector<SimModel::Segment> compute_segments(const std::vector<std::pair<int, double>>& points, double pass_s,
                                                double token_s) {
    std::map<int, std::pair<double, int>> by_size;  // tokens -> (sum of seconds, count)
    for (const auto& [n, t] : points) {
        auto& e = by_size[n];
        e.first += t;
        ++e.second;
    }
    std::vector<std::pair<int, double>> mean;  // (tokens, seconds), by size
    for (const auto& [n, e] : by_size) mean.push_back({n, e.first / e.second});
    std::vector<SimModel::Segment> segs;
    for (size_t i = 1; i < mean.size(); ++i) {
        const auto [n0, t0] = mean[i - 1];
        const auto [n1, t1] = mean[i];
        SimModel::Segment g{n1, pass_s, token_s};
        const double token = (t1 - t0) / (n1 - n0), pass = t0 - token * n0;
        if (token >= 0 && pass >= 0) g.pass_s = pass, g.token_s = token;
        segs.push_back(g);
    }
    return segs;
}

}  // namespace pipelm::pipeline
