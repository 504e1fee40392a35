#include "ferry/core/env.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <cstdlib>
#include <string>

#include "ferry/core/error.h"

namespace ferry {

bool parse_truth_value(std::string_view text) {
  std::string v(text);
  for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static constexpr std::array<std::string_view, 6> kTrue{"y", "yes", "t", "true", "on", "1"};
  static constexpr std::array<std::string_view, 6> kFalse{"n", "no", "f", "false", "off", "0"};
  for (std::string_view w : kTrue) {
    if (v == w) return true;
  }
  for (std::string_view w : kFalse) {
    if (v == w) return false;
  }
  throw InvalidArgument(fmt::format("invalid truth value {}", text),
                        ErrorFields{.expected = "y/yes/t/true/on/1 or n/no/f/false/off/0",
                                    .actual = std::string(text)});
}

std::optional<bool> env_flag(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  try {
    return parse_truth_value(value);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(
        fmt::format("{} (environment variable {})", e.what(), name),
        ErrorFields{.path = name, .expected = e.expected(), .actual = e.actual()});
  }
}

}  // namespace ferry
