#pragma once
// Memory budgets (Accelerate's max_memory): how many bytes each placement may hold, ordered GPUs
// by index, then cpu, then disk; and get_max_memory, which fills in probed defaults or checks
// and orders a user's budgets.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/core/bytes.h"
#include "ferry/core/placement.h"

namespace ferry::plan {

class MemoryBudget {
 public:
  MemoryBudget() = default;

  // Sets the budget of `placement`, keeping entries ordered (GPUs ascending, cpu, disk).
  void set(Placement placement, Bytes budget);
  std::optional<Bytes> find(Placement placement) const;
  bool contains(Placement placement) const { return find(placement).has_value(); }
  // Budget of `placement`; throws InvalidArgument naming it when absent.
  Bytes at(Placement placement) const;
  const std::vector<std::pair<Placement, Bytes>>& entries() const noexcept { return entries_; }
  // GPU placements in order.
  std::vector<Placement> gpus() const;
  bool empty() const noexcept { return entries_.empty(); }

  // {"0": 200, "cpu": 1000} — Accelerate's max_memory as JSON (keys are strings in JSON).
  std::string to_json() const;
  // Accepts what to_json writes; values may also be size strings ("20GiB").
  static MemoryBudget from_json(std::string_view json);
  // "0=200,cpu=1000".
  std::string to_string() const;
  // Parses budgets as `--max-memory` takes them: "0=20GiB,1=20GiB,cpu=64GiB" (sizes as
  // Bytes::parse, keys as get_max_memory: GPU indices, "cpu", "disk"); get_max_memory of
  // parse_budget_entries, so the CLI and the library read budgets alike. Throws InvalidArgument
  // naming the entry. GPU indices are checked against gpu_count (default: the probed count).
  static MemoryBudget parse(std::string_view text, std::optional<int> gpu_count = std::nullopt);

  bool operator==(const MemoryBudget&) const = default;

 private:
  std::vector<std::pair<Placement, Bytes>> entries_;
};

// A user's max_memory entry: device key ("0", "1", "cpu", "disk") and size ("20GiB", "1000").
struct BudgetEntry {
  std::string device;
  std::string size;
};

// get_max_memory(None): every probed GPU's free memory and the available RAM as "cpu".
MemoryBudget get_max_memory();
// get_max_memory(max_memory): sizes parsed with Bytes::parse (InvalidArgument for malformed or
// negative sizes); integer keys are GPUs — an index outside [0, gpu_count) is kept with the
// warning "Device {d} is not available, available devices are [0, 1]"; any other key than
// "cpu" and "disk" throws InvalidArgument "Device {k} is not recognized, available devices are
// integers(for GPU/XPU), 'mps', 'cpu' and 'disk'". gpu_count defaults to the probed count.
MemoryBudget get_max_memory(std::span<const BudgetEntry> max_memory,
                            std::optional<int> gpu_count = std::nullopt);
// Splits "0=20GiB,1=20GiB,cpu=64GiB" into entries (InvalidArgument for an entry without '=').
std::vector<BudgetEntry> parse_budget_entries(std::string_view text);

// Budgets less what must stay free on each device (activations, KV cache): `reserve` entries
// are subtracted from the matching placement, saturating at 0.
MemoryBudget subtract_reserve(const MemoryBudget& budget, const MemoryBudget& reserve);

}  // namespace ferry::plan
