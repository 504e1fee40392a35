#include "ferry/plan/auto_device_map.h"

#include "plan/allocator.h"

namespace ferry::plan {

std::uint64_t DevicePlan::disk_bytes() const {
  for (const DeviceUsage& d : devices) {
    if (d.placement.is_disk()) return d.used_bytes();
  }
  return 0;
}

DevicePlan plan_device_map(const ModuleTree& tree, const MemoryBudget& max_memory,
                           const PlanOptions& options) {
  return Allocator(tree, max_memory, options).run();
}

DeviceMap infer_auto_device_map(const ModuleTree& tree, const MemoryBudget& max_memory,
                                const PlanOptions& options) {
  return plan_device_map(tree, max_memory, options).device_map;
}

}  // namespace ferry::plan
