// --trace FILE.json: a Chrome trace (opens in Perfetto and chrome://tracing) of the ubatches of a
// pipeline run, with one track per stage (a complete event per ubatch it computed) and one per
// link. A link span runs from the sender's end of compute (or, when the previous ubatch was still
// on that link, from the moment that one got through: a link is a FIFO, and its spans never
// overlap) to the receiver's start of compute: time on the wire plus time queued behind the
// receiver's previous ubatch. The last link carries the result back to stage 0 and ends when the
// coordinator has it.
//
// The spans come with the results: every stage appends its wall-clock compute start
// (UbatchHeader::start_us, system_clock microseconds) next to its compute seconds (busy_s), so
// the coordinator gets each ubatch's whole timeline in its ResultHeader at no extra message.
// Stages on one machine (in-process, MPI or TCP ranks in network namespaces) share the clock
// exactly; across machines the spans are as good as their clock sync (NTP: about a millisecond),
// and a link span that comes out negative is drawn with zero length.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/pipeline/protocol.h"

namespace pipelm::pipeline {

// Wall-clock now in microseconds since the epoch (what start_us holds).
int64_t wall_us();

// Collects events; used by the one thread that takes results (Engine::next_result's caller).
class Trace {
public:
    // Starts a group of tracks (a trace "process"), e.g. one per session of a bench sweep. Results
    // added before the first call go to a group named "pipeline".
    void begin_group(const std::string& name, int n_stages);
    // One finished ubatch: stage s began it at r.start_us[s] and computed r.busy_s[s] seconds;
    // the coordinator had the result at result_us. Ignored when the two lists disagree in length.
    void add(const ResultHeader& r, int64_t result_us);
    // Writes {"traceEvents": [...]} with times relative to the earliest event; throws Error{kIo}.
    void write(const std::string& path) const;
    size_t n_events() const { return events_.size(); }

private:
    struct Event {
        int pid = 0, tid = 0;
        std::string name;
        int64_t ts = 0, dur = 0;  // microseconds (wall clock)
        uint64_t ubatch = 0;
    };
    struct Group {
        std::string name;
        int n_stages = 0;
    };
    std::vector<Group> groups_;
    std::vector<Event> events_;
    std::vector<int64_t> link_free_;  // per link of the current group: end of its last span
};

}  // namespace pipelm::pipeline
