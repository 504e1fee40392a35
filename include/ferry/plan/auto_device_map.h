#pragma once
// infer_auto_device_map: Accelerate's greedy placement of a model's modules on GPUs, then cpu,
// then disk, reproduced step for step (spec §2.10–2.12), with ferry's documented fixes
// (docs/deviations.md). O(number of tensors) for models without tied parameters.

#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/bytes.h"
#include "ferry/core/dtype.h"
#include "ferry/core/placement.h"
#include "ferry/plan/device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/module_sizes.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/no_split.h"

namespace ferry::nn {
class Module;
}

namespace ferry::plan {

struct PlanOptions {
  std::vector<std::string> no_split_module_classes;  // class names never split across devices
  std::vector<std::string> no_split_patterns;        // module path globs never split
  std::optional<DType> dtype;                        // weights converted to this (min rule)
  std::map<std::string, DType, std::less<>> special_dtypes;  // per-tensor dtype overrides
  bool verbose = false;                                      // print Accelerate's trace lines
  std::ostream* trace = nullptr;     // where verbose lines go; stdout when null
  bool clean_result = true;          // merge keys of one placement into their prefix
  bool offload_buffers = false;      // buffers of cpu/disk modules are offloaded too (warning only)
  bool fallback_allocation = false;  // on an empty device, place some smaller module that fits
  // Accelerate keeps room for the largest layer on the first GPU and the CPU (where offloaded
  // layers are loaded). resolve_and_plan turns it off once it has reserved that staging itself
  // (Note [Staging in the budget]).
  bool keep_largest_layer_room = true;

  SizeOptions size_options() const { return {.dtype = dtype, .special_dtypes = special_dtypes}; }
  NoSplit no_split() const { return {no_split_module_classes, no_split_patterns}; }
};

// How one placement was used by a plan.
struct DeviceUsage {
  Placement placement;
  std::optional<Bytes> budget_bytes;  // nullopt for disk (unlimited)
  std::uint64_t used_bits = 0;        // weights placed there
  std::uint64_t used_bytes() const noexcept { return (used_bits + 7) / 8; }
};

struct DevicePlan {
  DeviceMap device_map;
  std::vector<DeviceUsage> devices;  // every budgeted placement, then disk
  // Devices that received nothing, with the memory the first module refused would have needed
  // (Accelerate's "no modules could be assigned" info), in bits.
  std::vector<std::pair<Placement, std::uint64_t>> min_required_bits;
  // Buffers of modules placed on cpu or disk that will live on the execution device (0 with
  // offload_buffers), and whether they seem to fit no GPU (Accelerate's warning).
  std::uint64_t offloaded_buffer_bits = 0;
  bool buffers_fit_no_gpu = false;

  // Bytes of weights on disk (0 when the budgets hold the whole model).
  std::uint64_t disk_bytes() const;
};

// The full plan: the map, per-device usage and diagnostics. Emits Accelerate's warning (buffers
// of offloaded layers fit no GPU) and info log (devices that got nothing) through ferry's log.
DevicePlan plan_device_map(const ModuleTree& tree, const MemoryBudget& max_memory,
                           const PlanOptions& options = {});

// Accelerate's infer_auto_device_map. Pass get_max_memory() for Accelerate's default budgets.
DeviceMap infer_auto_device_map(const ModuleTree& tree, const MemoryBudget& max_memory,
                                const PlanOptions& options = {});
DeviceMap infer_auto_device_map(nn::Module& model, const MemoryBudget& max_memory,
                                const PlanOptions& options = {});

}  // namespace ferry::plan
