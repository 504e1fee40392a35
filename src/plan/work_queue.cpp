#include "plan/work_queue.h"

#include <algorithm>

#include "ferry/core/error.h"

namespace ferry::plan {

NodeId WorkQueue::pop_front() {
  FERRY_ASSERT(!reversed_.empty(), "pop from an empty work queue");
  const NodeId id = reversed_.back();
  reversed_.pop_back();
  --queued_[static_cast<std::size_t>(id)];
  return id;
}

void WorkQueue::push_front(NodeId id) {
  reversed_.push_back(id);
  ++queued_[static_cast<std::size_t>(id)];
}

void WorkQueue::push_front(std::span<const NodeId> ids) {
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) push_front(*it);
}

bool WorkQueue::remove(NodeId id) {
  if (!contains(id)) return false;
  // The first occurrence from the front is the last one in `reversed_`.
  auto it = std::find(reversed_.rbegin(), reversed_.rend(), id);
  reversed_.erase(std::next(it).base());
  --queued_[static_cast<std::size_t>(id)];
  return true;
}

void WorkQueue::replace(NodeId id, std::span<const NodeId> ids) {
  auto it = std::find(reversed_.rbegin(), reversed_.rend(), id);
  FERRY_ASSERT(it != reversed_.rend(), "entry {} is not queued", id);
  auto pos = reversed_.erase(std::next(it).base());
  --queued_[static_cast<std::size_t>(id)];
  reversed_.insert(pos, ids.rbegin(), ids.rend());
  for (const NodeId n : ids) ++queued_[static_cast<std::size_t>(n)];
}

MaxLayerTracker::MaxLayerTracker(const ModuleTree& tree, std::span<const std::uint64_t> node_bits,
                                 std::span<const char> no_split)
    : tree_(tree), bits_(node_bits), no_split_(no_split), layer_max_(tree.size(), 0) {
  for (std::size_t i = tree.size(); i-- > 0;) {
    const auto id = static_cast<NodeId>(i);
    if (is_layer(id)) {
      layer_max_[i] = bits_[i];
    } else {
      for (const NodeId c : tree.node(id).children) {
        layer_max_[i] = std::max(layer_max_[i], layer_max_[static_cast<std::size_t>(c)]);
      }
    }
  }
}

bool MaxLayerTracker::is_layer(NodeId id) const {
  const TreeNode& n = tree_.node(id);
  return n.is_tensor() || n.children.empty() || no_split_[static_cast<std::size_t>(id)];
}

void MaxLayerTracker::recompute(const WorkQueue& queue, bool include_tensors) {
  std::vector<NodeId> entries;
  bool any = false;
  size_bits_ = 0;
  queue.for_each([&](NodeId id) {
    if (!include_tensors && tree_.node(id).is_tensor()) return;
    entries.push_back(id);
    size_bits_ = any ? std::max(size_bits_, layer_max_[static_cast<std::size_t>(id)])
                     : layer_max_[static_cast<std::size_t>(id)];
    any = true;
  });
  names_.clear();
  // Only subtrees whose largest layer has the maximum size hold names.
  std::vector<NodeId> stack;
  for (const NodeId e : entries) {
    if (layer_max_[static_cast<std::size_t>(e)] != size_bits_) continue;
    stack.push_back(e);
    while (!stack.empty()) {
      const NodeId id = stack.back();
      stack.pop_back();
      if (is_layer(id)) {
        if (bits_[static_cast<std::size_t>(id)] == size_bits_) names_.insert(id);
        continue;
      }
      for (const NodeId c : tree_.node(id).children) {
        if (layer_max_[static_cast<std::size_t>(c)] == size_bits_) stack.push_back(c);
      }
    }
  }
}

void MaxLayerTracker::drop(NodeId popped) {
  names_.erase(names_.lower_bound(popped), names_.lower_bound(tree_.node(popped).end));
}

}  // namespace ferry::plan
