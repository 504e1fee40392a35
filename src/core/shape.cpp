#include "ferry/core/shape.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace ferry {

std::string shape_string(std::span<const std::int64_t> shape) {
  return fmt::format("[{}]", fmt::join(shape.begin(), shape.end(), ", "));
}

}  // namespace ferry
