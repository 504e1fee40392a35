#pragma once
// The queue of entries infer_auto_device_map still has to place, and the tracker of the largest
// remaining layer it reserves room for. Both are O(1) or O(log n) per step, so that planning
// stays linear in the number of tensors.

#include <cstdint>
#include <set>
#include <span>
#include <vector>

#include "ferry/plan/module_tree.h"

namespace ferry::plan {

// Ordered entries (node ids) with O(1) work at the front and O(1) membership tests. Operations
// in the middle (tied modules, fallback) are linear; they are rare.
class WorkQueue {
 public:
  explicit WorkQueue(std::size_t n_nodes) : queued_(n_nodes, 0) {}

  bool empty() const noexcept { return reversed_.empty(); }
  NodeId pop_front();
  void push_front(NodeId id);
  // Puts `ids` at the front, ids[0] first.
  void push_front(std::span<const NodeId> ids);
  bool contains(NodeId id) const { return queued_[static_cast<std::size_t>(id)] > 0; }
  // Removes the first occurrence of `id`; false if absent.
  bool remove(NodeId id);
  // Replaces the first occurrence of `id` by `ids` (in order), in place.
  void replace(NodeId id, std::span<const NodeId> ids);
  // Entries front first.
  std::vector<NodeId> in_order() const { return {reversed_.rbegin(), reversed_.rend()}; }
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (auto it = reversed_.rbegin(); it != reversed_.rend(); ++it) fn(*it);
  }

 private:
  std::vector<NodeId> reversed_;  // back() is the front of the queue
  std::vector<std::uint32_t> queued_;
};

// The largest layer among the queue's entries (Accelerate's max_layer_size / max_layer_names):
// recomputed over the queue when asked, and otherwise only shrunk as entries are popped.
class MaxLayerTracker {
 public:
  // `layer_max[n]`: size of the largest layer in n's subtree (a tensor or a childless or
  // no-split module is itself a layer; a module with children is not).
  MaxLayerTracker(const ModuleTree& tree, std::span<const std::uint64_t> node_bits,
                  std::span<const char> no_split);

  // Recomputes over the queue's entries; tensor entries count only with include_tensors.
  void recompute(const WorkQueue& queue, bool include_tensors);
  // Forgets the layers at or under `popped` (the names filter of the main loop).
  void drop(NodeId popped);
  bool empty() const noexcept { return names_.empty(); }
  std::uint64_t size_bits() const noexcept { return size_bits_; }

 private:
  bool is_layer(NodeId id) const;

  const ModuleTree& tree_;
  std::span<const std::uint64_t> bits_;
  std::span<const char> no_split_;
  std::vector<std::uint64_t> layer_max_;
  std::uint64_t size_bits_ = 0;
  std::set<NodeId> names_;  // layers of size size_bits_, by id (subtrees are id ranges)
};

}  // namespace ferry::plan
