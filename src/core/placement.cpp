#include "ferry/core/placement.h"

#include <fmt/format.h>

#include <charconv>

#include "ferry/core/error.h"

namespace ferry {

Placement Placement::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "disk") return disk();
  std::string_view digits = text;
  for (std::string_view prefix : {"cuda:", "gpu:"}) {
    if (digits.starts_with(prefix)) digits.remove_prefix(prefix.size());
  }
  int index = -1;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || index < 0) {
    throw InvalidArgument(
        fmt::format("invalid placement '{}': expected a GPU index (0, 1, ...), 'cpu' or 'disk'",
                    text),
        ErrorFields{.expected = "a GPU index, 'cpu' or 'disk'", .actual = std::string(text)});
  }
  return gpu(index);
}

std::string Placement::to_string() const {
  switch (kind_) {
    case Kind::kGpu: return std::to_string(index_);
    case Kind::kCpu: return "cpu";
    case Kind::kDisk: return "disk";
  }
  return "?";
}

}  // namespace ferry
