#pragma once
// Size strings given on the command line and counts printed by it.

#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/core/bytes.h"

namespace ferry::cli {

// `text` given to `flag` ("--prefetch-bytes", or "--max-memory cpu" for one budget entry), with
// Bytes::parse's meaning (Accelerate's): "8GB" = 8e9 bytes, "8GiB" = 8 × 2^30, a lowercase final
// 'b' means bits ("8gb" = 1e9 bytes). With `warn`, such a bit size is reported by a warning
// giving its byte figure and the likely intent. Throws InvalidArgument naming the flag, the text
// and the accepted forms ("8G" is rejected: no unit means bytes only for plain integers).
Bytes parse_size_flag(std::string_view flag, std::string_view text, bool warn);

// Checks each size of a DEVICE=SIZE list given to `flag` (--max-memory, --reserve) as
// parse_size_flag does, warning about bit sizes once.
void check_budget_sizes(std::string_view flag, std::string_view text);

// A count that cannot be read as bytes: "24.1 M parameters" style, with K, M, B (billions),
// T: "950", "24.1 K", "7.24 B" (three significant digits).
std::string format_count(std::uint64_t n);

}  // namespace ferry::cli
