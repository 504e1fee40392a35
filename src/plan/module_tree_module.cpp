// The LibTorch half of the plan layer: a ModuleTree walked from an nn::Module, and the planning
// functions that take a module (each builds the tree and calls its tree overload).
#include "ferry/nn/module.h"

#include <algorithm>

#include "ferry/core/error.h"
#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/balanced_memory.h"
#include "ferry/plan/device_map.h"
#include "ferry/plan/module_sizes.h"
#include "ferry/plan/module_tree.h"
#include "plan/tree_builder.h"

namespace ferry::plan {
namespace {

class ModuleWalker {
 public:
  NodeId add_module(nn::Module& module, const std::string& name, NodeId parent) {
    const NodeId id =
        builder_.add_node({.name = name, .class_name = module.class_name(), .parent = parent});
    for (const auto& entry : module.tensors()) {
      if (entry->is_buffer()) continue;
      const NodeId t = add_tensor(*entry, name, id);  // may reallocate nodes_
      builder_.node(id).params.push_back(t);
    }
    ancestors_.push_back(&module);
    for (const auto& [child_name, child] : module.children()) {
      // Every name of a shared module is a node, so a cycle would never end (Note [Module
      // cycles] in nn/module.cpp).
      FERRY_CHECK(std::find(ancestors_.begin(), ancestors_.end(), child.get()) == ancestors_.end(),
                  InvalidArgument,
                  "module '{}' ({}) is one of its own ancestors: a module tree has no cycles",
                  join_name(name, child_name), child->class_name());
      const NodeId c = add_module(*child, join_name(name, child_name), id);
      builder_.node(id).children.push_back(c);
    }
    ancestors_.pop_back();
    for (const auto& entry : module.tensors()) {
      if (!entry->is_buffer()) continue;
      const NodeId t = add_tensor(*entry, name, id);
      builder_.node(id).buffers.push_back(t);
    }
    builder_.node(id).end = builder_.size();
    return id;
  }

  NodeId add_tensor(const nn::TensorEntry& entry, const std::string& prefix, NodeId parent) {
    const at::Tensor& t = entry.slot->tensor();
    const NodeId id =
        builder_.add_node({.name = join_name(prefix, entry.name),
                           .kind = entry.is_buffer() ? NodeKind::kBuffer : NodeKind::kParameter,
                           .element = ElementType::of(t.scalar_type()),
                           .numel = static_cast<std::uint64_t>(t.numel()),
                           .persistent = entry.persistent,
                           .parent = parent});
    builder_.node(id).end = id + 1;
    builder_.set_slot(id, entry.slot.get());
    return id;
  }

  TreeBuilder& builder() { return builder_; }

 private:
  TreeBuilder builder_;
  std::vector<const nn::Module*> ancestors_;  // of the module being added
};

}  // namespace

ModuleTree ModuleTree::from_module(nn::Module& model) {
  ModuleWalker walker;
  walker.add_module(model, "", -1);
  walker.builder().mark_shared();
  return std::move(walker.builder()).finish();
}

DeviceMap infer_auto_device_map(nn::Module& model, const MemoryBudget& max_memory,
                                const PlanOptions& options) {
  return infer_auto_device_map(ModuleTree::from_module(model), max_memory, options);
}

MemoryBudget get_balanced_memory(nn::Module& model, const std::optional<MemoryBudget>& max_memory,
                                 const PlanOptions& options, bool low_zero) {
  return get_balanced_memory(ModuleTree::from_module(model), max_memory, options, low_zero);
}

void check_device_map(nn::Module& model, const DeviceMap& device_map) {
  check_device_map(ModuleTree::from_module(model), device_map);
}

ModuleSizes compute_module_sizes(nn::Module& model, const SizeOptions& options) {
  return compute_module_sizes(ModuleTree::from_module(model), options);
}

}  // namespace ferry::plan
