#include "ferry/core/placement.h"

#include "ferry/core/execution_device.h"

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

// Note [Execution devices]
// A Placement says where weights rest (a GPU, the CPU, disk); an ExecutionDevice says where a
// module computes (a GPU or the CPU). Hooks, the prefetcher, move_to and the main device take an
// ExecutionDevice, so "compute on disk" does not compile; the one place a Placement becomes an
// ExecutionDevice is dispatch's block resolver (role_of in dispatch_model.cpp), which sends
// disk-resting blocks to the main device, or ExecutionDevice::from where a user names a device.

ExecutionDevice ExecutionDevice::from(Placement placement, std::string_view what) {
  if (std::optional<ExecutionDevice> device = of(placement)) return *device;
  throw InvalidArgument(
      fmt::format("{} cannot be 'disk': disk is where weights rest, not where they compute; give "
                  "a GPU index or 'cpu'",
                  what),
      ErrorFields{.expected = "a GPU index or 'cpu'", .actual = "disk"});
}

ExecutionDevice ExecutionDevice::parse(std::string_view text) {
  return from(Placement::parse(text), fmt::format("execution device '{}'", text));
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
