// What `pipelm simulate` and `pipelm plan` share (defined in cmd_simulate.cc): the link-rate
// syntax and the calibration rows of a 1-stage `pipelm bench -o jsonl` run.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "launcher/cli.h"
#include "runtime/pipeline/simulator.h"

namespace pipelm::launcher {

// "100mbit" -> 1e8 bits/s; "inf" -> 0 (no transfer time). Throws naming --link-rate.
double parse_link_rate(const std::string& rate);

// (tokens per ubatch, seconds per ubatch) of every 1-stage row of a bench jsonl file, for
// pipeline::fit_compute. Throws kIo naming --calib when unreadable, kFormat for a bad row.
std::vector<std::pair<int, double>> calibration_points(const std::string& path);

// The compute model of `m` (pass_s, token_s) from --calib FILE (fitted to its 1-stage rows) or
// --pass-ms with --token-ms. False when neither is given; throws naming --calib when its rows do
// not fit.
bool compute_model(const cli::Args& a, pipeline::SimModel& m);

}  // namespace pipelm::launcher
