#pragma once
// Builds a ModuleTree node by node in pre-order: from checkpoint headers (module_tree.cpp,
// LibTorch-free) or from a module (module_tree_module.cpp). `slots_` remembers which tensor each
// node reads so that tied and shared tensors can be recognised.

#include <string>
#include <string_view>
#include <vector>

#include "ferry/plan/module_tree.h"

namespace ferry::plan {

// "prefix.name", or "name" for an empty prefix.
std::string join_name(std::string_view prefix, std::string_view name);

class TreeBuilder {
 public:
  NodeId add_node(TreeNode node);
  TreeNode& node(NodeId id) { return tree_.nodes_[static_cast<std::size_t>(id)]; }
  NodeId size() const { return static_cast<NodeId>(tree_.nodes_.size()); }
  // The tensor storage node `id` reads (for recognising shared tensors).
  void set_slot(NodeId id, const void* slot) { slots_[static_cast<std::size_t>(id)] = slot; }

  // Marks second registrations of a tensor as not counted (parameters and buffers are
  // deduplicated separately, as named_parameters and named_buffers are) and groups tied
  // parameters.
  void mark_shared();

  ModuleTree finish() &&;

 private:
  std::vector<NodeId> modules() const;

  ModuleTree tree_;
  std::vector<const void*> slots_;
};

}  // namespace ferry::plan
