#pragma once
// ModuleTree: what planning knows about a model — its modules, their class names, and each
// tensor's name, dtype and element count — as a flat pre-order array, built either from an
// nn::Module (on any device, meta included) or from checkpoint headers alone (a tree made from
// the dotted tensor names). Planning functions are pure functions of a tree, sizes and budgets.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ferry/core/dtype.h"
#include "ferry/core/tensor_info.h"

namespace ferry::nn {
class Module;
}

namespace ferry::plan {

// Index of a node in a ModuleTree; the root module is node 0.
using NodeId = std::int32_t;

enum class NodeKind : unsigned char { kModule, kParameter, kBuffer };

struct TreeNode {
  std::string name;        // full dotted name; "" for the root
  std::string class_name;  // modules: "Linear", ... ("" when unknown, e.g. from headers)
  NodeKind kind = NodeKind::kModule;
  ElementType element = DType::kF32;  // tensors: element type (any LibTorch type from a module)
  std::uint64_t numel = 0;            // tensors: number of elements
  bool persistent = true;             // buffers: false keeps it out of the state dict
  // Tensors: false for a second registration of a tied or shared tensor. Such a name is not a
  // key of compute_module_sizes (Accelerate deduplicates tensors by identity), so it counts 0.
  bool counted = true;
  NodeId parent = -1;  // -1 for the root
  NodeId end = 0;      // this node's subtree is the id range [id, end)
  // Modules: direct parameters, children and buffers, each in registration order.
  std::vector<NodeId> params;
  std::vector<NodeId> children;
  std::vector<NodeId> buffers;

  bool is_module() const noexcept { return kind == NodeKind::kModule; }
  bool is_tensor() const noexcept { return kind != NodeKind::kModule; }
};

class ModuleTree {
 public:
  // The tree of `model`: every module path (a module shared under two names appears under
  // both), tensors in registration order, tied groups from shared slots.
  static ModuleTree from_module(nn::Module& model);
  // The tree of checkpoint tensors: every dotted prefix of a name is a module (class ""), every
  // name a parameter. Siblings are ordered naturally (numeric names by value: "2" < "10"), with
  // input embeddings ("embed_tokens", "wte", ...) first and output heads ("lm_head", ...) last,
  // since headers carry no declaration order. Throws InvalidArgument for an empty or duplicate
  // name, or a name that is both a tensor and a module prefix.
  static ModuleTree from_tensors(std::span<const TensorInfo> tensors);

  std::size_t size() const noexcept { return nodes_.size(); }
  const TreeNode& node(NodeId id) const { return nodes_[static_cast<std::size_t>(id)]; }
  const std::vector<TreeNode>& nodes() const noexcept { return nodes_; }
  static constexpr NodeId root() noexcept { return 0; }

  // The node with full name `name` (module or tensor), or nullopt.
  std::optional<NodeId> find(std::string_view name) const;
  // True if `ancestor`'s subtree contains `id` (a node contains itself).
  bool contains(NodeId ancestor, NodeId id) const noexcept {
    return ancestor <= id && id < node(ancestor).end;
  }

  // Groups of parameter nodes that share one tensor (tied parameters): each group sorted by
  // name, groups in the order their first member is met (Accelerate's find_tied_parameters).
  const std::vector<std::vector<NodeId>>& tied_groups() const noexcept { return tied_groups_; }

  // Tensor nodes in Accelerate's named_module_tensors(recurse=True) order: all parameters
  // (module pre-order), then all buffers. compute_module_sizes inserts keys in this order.
  std::vector<NodeId> tensors_in_size_order() const;
  // Full names of the state dict (parameters and persistent buffers, tied ones under every
  // name), in PyTorch's state_dict order.
  std::vector<NodeId> state_dict_order() const;

 private:
  friend class TreeBuilder;
  void finish();  // builds the name index

  std::vector<TreeNode> nodes_;
  std::vector<std::vector<NodeId>> tied_groups_;
  std::unordered_map<std::string, NodeId> index_;
};

}  // namespace ferry::plan
