#pragma once
// Environment variables with Accelerate's truth-value words.

#include <optional>
#include <string_view>

namespace ferry {

// y/yes/t/true/on/1 → true, n/no/f/false/off/0 → false (case-insensitive); anything else throws
// InvalidArgument("invalid truth value <text>").
bool parse_truth_value(std::string_view text);

// The truth value of environment variable `name`; nullopt when unset.
std::optional<bool> env_flag(const char* name);

}  // namespace ferry
