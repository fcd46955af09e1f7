// A discrete-event model of ubatches flowing through a pipeline, as the Engine runs them: the
// coordinator submits ubatches and waits for results; stage 0 (on its own thread, with 2+
// stages; inside submit() with 1) and stages 1..S-1 take ubatches in arrival order, one at a time; every link is a FIFO that carries one
// message at a time (bytes / rate, less what a token bucket lets through at once) and adds a
// fixed latency; the last stage sends the result back
// to stage 0. Everything is FIFO, so a ubatch's whole path is known when it is submitted: the
// model is a max-plus recurrence over (stage free, link free) times, exact for this scheduler.
//
// Compute: a ubatch of n tokens costs stage s  share[s] x (pass_s + token_s x n) seconds: a fixed
// part (the weights are read once per ubatch: memory-bound) and a part per token, both fitted
// from a 1-stage calibration run (pipelm simulate --calib; per segment between the measured
// ubatch sizes, SimModel::segments). The workloads mirror `pipelm bench`:
// ppN (prefill_sample: --ubatch chunks, at most S in flight) and tgN@Kseq (K sequences in
// min(S, K) groups, each group's next step submitted when its result is back).
//
// Stages that share a host (in-process stages, several ranks or workers on one node) share its
// memory bandwidth and cores. On a host with H of the stages, c = min(H, ubatches in flight) of
// them compute at once (the workload's bound: min(S, ubatches) for a prompt, the number of groups
// for decode), and a ubatch of n tokens on stage s takes
//   share[s] x (pass_s x max(mem, cpu) + token_s x n x cpu)
//   mem = max(1, c x stage_read / host_read)      cpu = max(1, c x threads / cores)
// The fixed part of a ubatch is reading the stage's weights; the calibration (one stage alone,
// its threads reading at stage_read bytes/s) measured it, and c stages at once share the host's
// host_read bytes/s, so each reads more slowly when c x stage_read exceeds it; the per-token part
// is compute and slows only when the host's stages want more cores than it has. (docs/scaling.md:
// without this, 2 stages of 4-sequence decode on one 2-core host came out ~30 % slower than
// predicted.)
#pragma once
#include <cstdint>
#include <vector>

namespace pipelm::pipeline {

struct SimModel {
    double pass_s = 0;           // fixed seconds of one ubatch through all layers and the head
    double token_s = 0;          // seconds per token of a ubatch
    // Optional, from a calibration with several ubatch sizes: a (pass, token) pair per segment
    // between two measured sizes, used for ubatches of up to `upto` tokens (the last one beyond):
    // the time per ubatch then goes through every measured point (a 1-token decode costs what it
    // measured, where one line through 1, 4 and 32 tokens misses it by ~10 %). Empty: pass_s and
    // token_s for every size.
    struct Segment {
        int64_t upto = 0;
        double pass_s = 0, token_s = 0;
    };
    std::vector<Segment> segments;
    std::vector<double> share;   // per stage share of the compute (sums to 1); size = stages
    int64_t bytes_per_token = 0; // hidden state per token on a link (n_embd x wire bytes)
    int64_t header_bytes = 96;   // ubatch header (ids, positions, times): about 12 bytes/token more
    int64_t result_bytes = 64;   // a result with sampled ids
    double link_bps = 0;         // bits per second of every link; 0 = no transfer time
    // Bytes on the wire per byte of message: TCP/IPv4 (timestamps) over Ethernet at MTU 1500
    // carries 1448 payload bytes in 1514 frame bytes as Linux's shapers count them (+24 of
    // preamble, FCS and gap on a physical wire).
    double wire_per_byte = 1514.0 / 1448.0;
    double link_latency_s = 0;   // added once per message
    // Host CPU time to take in one message (the receiving process's I/O thread, the wake-up of its
    // stage thread, the kernel's share of the path): charged to the receiving stage (a ubatch to
    // stages 1.., a result to stage 0) like compute, so it slows with the host's cores as compute
    // does. On an idle host it adds to each hop like latency; on a host whose cores are all taken
    // (many stages on few cores) it costs throughput, which latency does not.
    double msg_cpu_s = 0;
    // Host CPU time per byte a stage sends (the kernel's network stack, per packet: segmenting,
    // a shaper's timer, the peer's receive path when both ends share the machine, as emulated
    // hosts do): charged to the sending stage after the compute of the ubatch it sends, not
    // stretched when the host's cores are shared (softirq work preempts the stages' threads
    // rather than taking turns with them). Tens of ns per byte through veth + tbf on a 2-core VM;
    // near 0 on a NIC with offloads.
    double byte_cpu_s = 0;
    // A token bucket in front of each link, as Linux tbf shapes one (hosts.sh --rate): up to this
    // many bytes pass at once after the link has been idle long enough to refill them; 0 = a
    // plain rate (a real link).
    double link_burst_bytes = 0;
    // Hosts: stage s runs on host[s] (empty: every stage on a host of its own).
    std::vector<int> host;
    double stage_read_Bps = 0;  // bytes/s one stage's threads read alone (as in the calibration)
    double host_read_Bps = 0;   // bytes/s all cores of a host read together; either 0 = no sharing
    int host_cores = 0;         // cores of a host; 0 = as many as its stages use
    int threads_per_stage = 1;
};

struct SimResult {
    double seconds = 0;          // first submit to last result
    int64_t tokens = 0;          // tokens counted for t/s (as bench counts them)
    std::vector<double> busy_s;  // compute seconds per stage, with its host time for messages
    std::vector<double> host_s;  // of busy_s: the host time for messages (msg_cpu_s, byte_cpu_s)
    std::vector<double> ttft, itl;  // per sequence: first token time, gaps between tokens
    double tps() const { return seconds > 0 ? static_cast<double>(tokens) / seconds : 0; }
};

// ppN: one prompt of `prompt` tokens in chunks of `ubatch`.
SimResult simulate_prompt(const SimModel& m, int prompt, int ubatch);
// tgN@Kseq: `sequences` sequences, `n_gen` tokens each; step 0 carries `seq_prompt` prompt tokens
// per sequence (in chunks of `ubatch`; the group's tokens come with its last chunk).
SimResult simulate_decode(const SimModel& m, int sequences, int n_gen, int seq_prompt, int ubatch);

// Least-squares fit of (pass_s, token_s) to measured (tokens in a ubatch, seconds per ubatch)
// pairs of one stage; needs two different token counts. Returns false when it cannot fit.
bool fit_compute(const std::vector<std::pair<int, double>>& points, double& pass_s, double& token_s);

// SimModel::segments through the measured points (the mean time of each ubatch size, in order of
// size); a segment whose line would have a negative part (noise between close sizes) takes the
// least-squares pass_s and token_s instead. Fewer than two sizes: none.
std::vector<SimModel::Segment> compute_segments(const std::vector<std::pair<int, double>>& points, double pass_s,
                                                double token_s);

}  // namespace pipelm::pipeline
