#pragma once
// How World's errors show durations, ranks, c10d's and Gloo's exceptions and agreed values.

#include <chrono>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::engine::detail {

// "3 s", "0.5 s".
std::string duration_text(std::chrono::milliseconds d);
// "rank 2", "ranks 1 and 2", "ranks 1, 2 and 4".
std::string ranks_text(const std::vector<int>& ranks);
// The message of an exception from c10d or Gloo: c10::Error without its C++ backtrace, one line.
std::string reason_of(const std::exception& e);
// `text` in double quotes, with quotes, backslashes and control bytes escaped.
std::string quote_text(std::string_view text);
// `value` as an error shows it: whole when short, else the part around its first difference from
// `other`, with its length.
std::string shown(std::string_view value, std::string_view other);

}  // namespace ferry::engine::detail
