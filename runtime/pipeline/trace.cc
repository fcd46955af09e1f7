// Chrome trace writer of --trace (see trace.h). Track ids inside a group: 2s = stage s compute,
// 2s+1 = the link out of stage s (to s+1, or the result back to stage 0 from the last stage).
#include "runtime/pipeline/trace.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <limits>
#include <sstream>

#include "runtime/base/error.h"

namespace pipelm::pipeline {

int64_t wall_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void Trace::begin_group(const std::string& name, int n_stages) {
    groups_.push_back({name, n_stages});
    link_free_.assign(static_cast<size_t>(n_stages), std::numeric_limits<int64_t>::min());
}

void Trace::add(const ResultHeader& r, int64_t result_us) {
    const size_t S = r.start_us.size();
    if (S == 0 || r.busy_s.size() != S) return;
    if (groups_.empty() || groups_.back().n_stages != static_cast<int>(S)) begin_group("pipeline", static_cast<int>(S));
    const int pid = static_cast<int>(groups_.size());
    const std::string name = "ubatch " + std::to_string(r.id);
    for (size_t s = 0; s < S; ++s) {
        const int64_t t0 = r.start_us[s];
        const int64_t t1 = t0 + static_cast<int64_t>(r.busy_s[s] * 1e6 + 0.5);
        events_.push_back({pid, static_cast<int>(2 * s), name, t0, t1 - t0, r.id});
        if (S == 1) continue;  // one stage: no links
        const int64_t next = s + 1 < S ? r.start_us[s + 1] : result_us;
        const int64_t from = std::max(t1, link_free_[s]);  // results come in submission order
        const int64_t to = std::max(from, next);
        link_free_[s] = to;
        events_.push_back({pid, static_cast<int>(2 * s + 1), name, from, to - from, r.id});
    }
}

namespace {

std::string quoted(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        if (static_cast<unsigned char>(c) >= 0x20) o += c;
    }
    return o + "\"";
}

// Metadata event naming a process or thread, and its sort position.
void meta(std::ostream& os, bool& first, int pid, int tid, const char* what, const std::string& name, int sort) {
    const bool thread = tid >= 0;
    os << (first ? "\n" : ",\n") << "{\"ph\":\"M\",\"pid\":" << pid << (thread ? ",\"tid\":" + std::to_string(tid) : "")
       << ",\"name\":\"" << what << "_name\",\"args\":{\"name\":" << quoted(name) << "}}";
    os << ",\n{\"ph\":\"M\",\"pid\":" << pid << (thread ? ",\"tid\":" + std::to_string(tid) : "") << ",\"name\":\"" << what
       << "_sort_index\",\"args\":{\"sort_index\":" << sort << "}}";
    first = false;
}

}  // namespace

void Trace::write(const std::string& path) const {
    int64_t base = std::numeric_limits<int64_t>::max();
    for (const Event& e : events_) base = std::min(base, e.ts);
    std::ostringstream os;
    os << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[";
    bool first = true;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const int pid = static_cast<int>(g + 1), S = groups_[g].n_stages;
        meta(os, first, pid, -1, "process", groups_[g].name, pid);
        for (int s = 0; s < S; ++s) {
            meta(os, first, pid, 2 * s, "thread", "stage " + std::to_string(s), 2 * s);
            if (S > 1)
                meta(os, first, pid, 2 * s + 1, "thread",
                     s + 1 < S ? "link " + std::to_string(s) + " -> " + std::to_string(s + 1)
                               : "link " + std::to_string(s) + " -> 0 (result)",
                     2 * s + 1);
        }
    }
    for (const Event& e : events_) {
        os << (first ? "\n" : ",\n") << "{\"ph\":\"X\",\"pid\":" << e.pid << ",\"tid\":" << e.tid
           << ",\"name\":" << quoted(e.name) << ",\"cat\":\"" << (e.tid % 2 ? "link" : "compute") << "\",\"ts\":"
           << e.ts - base << ",\"dur\":" << e.dur << ",\"args\":{\"ubatch\":" << e.ubatch << "}}";
        first = false;
    }
    os << "\n]}\n";
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << os.str();
    if (!f) PIPELM_THROW(ErrorCode::kIo, "--trace ", path, ": cannot write the trace file");
}

}  // namespace pipelm::pipeline
