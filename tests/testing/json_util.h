// JSON fixtures and outputs of the model-level tests (reference ids, traces), read with
// nlohmann-json. Apart from test_util.h so that only the tests that read JSON compile its header.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/testing/test_util.h"

namespace pipelm::testing {

// Throws nlohmann::json::parse_error (with the byte offset) on malformed input.
inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text(path)); }

// A JSON array of token ids.
inline std::vector<int32_t> json_ids(const nlohmann::json& v) { return v.get<std::vector<int32_t>>(); }

}  // namespace pipelm::testing
