#pragma once
// The state of one infer_auto_device_map run. The main loop lives in allocator.cpp; tied
// parameters and fallback allocation in allocator_ties.cpp.

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/plan/auto_device_map.h"
#include "plan/work_queue.h"

namespace ferry::plan {

class Allocator {
 public:
  Allocator(const ModuleTree& tree, const MemoryBudget& max_memory, const PlanOptions& options);
  DevicePlan run();

 private:
  // Tied groups relevant to an entry: some member inside it and some outside.
  struct Ties {
    std::vector<std::size_t> groups;  // indices into tree_.tied_groups()
    std::vector<NodeId> params;       // members outside the entry, group by group
  };
  // get_module_size_with_ties: the entry's size plus, for each outside member, the size of the
  // queue entry holding it less the member's own size.
  struct SizeWithTies {
    std::int64_t bits = 0;
    std::vector<NodeId> holders;  // one per tied param found in the queue
  };
  // Returns the queue entry holding `param` (a proper ancestor of it), if any.
  using HolderLookup = std::function<std::optional<NodeId>(NodeId param)>;

  Ties relevant_ties(NodeId entry) const;
  SizeWithTies size_with_ties(const Ties& ties, std::int64_t entry_bits,
                              const HolderLookup& holder) const;
  std::optional<NodeId> holder_in_queue(NodeId param) const;
  // What splitting `id` enqueues: its direct parameters, children and direct buffers.
  std::vector<NodeId> split_entries(NodeId id) const;
  bool can_split(NodeId id) const;
  // fallback_allocate: a queued module (or part of one, whose ancestors are then split in the
  // queue) of size ≤ limit_bits, removed from the queue; nullopt when none fits.
  std::optional<NodeId> fallback_allocate(std::int64_t limit_bits);
  void finish(DevicePlan& plan) const;

  template <class... Args>
  void trace(fmt::format_string<Args...> f, Args&&... args) const {
    if (options_.verbose) emit_trace(fmt::format(f, std::forward<Args>(args)...));
  }
  void emit_trace(const std::string& line) const;
  std::string names_of(std::span<const NodeId> ids) const;
  const std::string& name(NodeId id) const { return tree_.node(id).name; }

  const ModuleTree& tree_;
  const MemoryBudget& max_memory_;
  const PlanOptions& options_;
  SizeOptions size_options_;
  std::vector<std::uint64_t> bits_;
  std::vector<char> no_split_;
  std::vector<std::vector<std::string>> tied_dotted_;  // member name + "." per group

  std::vector<Placement> devices_;
  std::vector<std::optional<std::int64_t>> limit_bits_;  // nullopt: unlimited (disk)
  std::vector<char> is_main_;  // reserves room for the largest remaining layer
  std::vector<std::int64_t> used_bits_;
  std::vector<std::uint64_t> buffer_bits_;
  std::vector<std::pair<std::size_t, std::int64_t>> min_required_;  // device index, bits

  WorkQueue queue_;
  MaxLayerTracker max_layer_;
  DeviceMap map_;
  std::vector<std::pair<NodeId, std::size_t>> placed_;  // node, device index
};

}  // namespace ferry::plan
