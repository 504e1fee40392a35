#pragma once
// Module sizes (Accelerate's compute_module_sizes, get_max_layer_size, calculate_maximum_sizes).
// Sizes are counted in bits and reported in bytes, so sub-byte element types (bool counts 1/8
// byte, as in Accelerate) add up exactly, with no floating-point drift.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ferry/core/dtype.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/no_split.h"

namespace ferry::nn {
class Module;
}

namespace ferry::plan {

struct SizeOptions {
  // Weights will be converted to this type when loaded: a floating tensor counts
  // min(bits(dtype), bits(its dtype)); integer and bool tensors keep their size.
  std::optional<DType> dtype;
  // Full tensor name → dtype; overrides `dtype` for that tensor (no min rule).
  std::map<std::string, DType, std::less<>> special_dtypes;
  bool buffers_only = false;  // count buffers only (compute_module_total_buffer_size)
};

// Size of one tensor under `options`, in bits (numel × accounting bits; 0 when not counted).
std::uint64_t tensor_size_bits(const TreeNode& tensor, const SizeOptions& options);

// Name → size for "" (the whole model), every module that holds a counted tensor, and every
// counted tensor; keys in Accelerate's insertion order. A value type.
class ModuleSizes {
 public:
  ModuleSizes() = default;
  // From per-node bit counts of `tree` (as computed by compute_module_sizes).
  ModuleSizes(const ModuleTree& tree, std::span<const std::uint64_t> node_bits,
              std::span<const char> is_key);

  // Keys in insertion order with their sizes in bits.
  const std::vector<std::pair<std::string, std::uint64_t>>& entries() const noexcept {
    return entries_;
  }
  bool contains(std::string_view name) const;
  // Size in bits; 0 for a name that is not a key (Accelerate's defaultdict).
  std::uint64_t bits(std::string_view name) const;
  // Size in bytes, rounded up to a whole byte.
  std::uint64_t bytes(std::string_view name) const { return (bits(name) + 7) / 8; }
  std::uint64_t total_bits() const { return bits(""); }

  // {"name": bytes, ...}; sizes that are not whole bytes are written as decimals ("0.125").
  std::string to_json() const;
  static ModuleSizes from_json(std::string_view json);

 private:
  std::vector<std::pair<std::string, std::uint64_t>> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

// Per-node sizes in bits (a module: the sum over its counted tensors), indexed by NodeId.
std::vector<std::uint64_t> compute_node_bits(const ModuleTree& tree, const SizeOptions& options);

// Accelerate's compute_module_sizes: parameters and all buffers (persistent or not), tied
// tensors once.
ModuleSizes compute_module_sizes(const ModuleTree& tree, const SizeOptions& options = {});
ModuleSizes compute_module_sizes(nn::Module& model, const SizeOptions& options = {});

// Sum of the sizes of all buffers of `tree`'s subtree at `node`, in bits.
std::uint64_t compute_module_total_buffer_bits(const ModuleTree& tree, NodeId node,
                                               const SizeOptions& options);

// The largest "layer" among `entries` (and its descendants): a layer is a module without
// children or a no-split module, or an entry that is a tensor. Names of all layers of that size
// in depth-first order (Accelerate's get_max_layer_size).
struct MaxLayer {
  std::uint64_t size_bits = 0;
  std::vector<std::string> names;
};
MaxLayer get_max_layer_size(const ModuleTree& tree, std::span<const NodeId> entries,
                            std::span<const std::uint64_t> node_bits,
                            std::span<const char> no_split);

// Entries of the root as Accelerate enqueues them: direct parameters, children, direct buffers.
std::vector<NodeId> top_level_entries(const ModuleTree& tree);

// Accelerate's calculate_maximum_sizes: total size and largest layer, in bits.
struct MaximumSizes {
  std::uint64_t total_bits = 0;
  MaxLayer largest_layer;
};
MaximumSizes calculate_maximum_sizes(const ModuleTree& tree, const NoSplit& no_split = {},
                                     const SizeOptions& options = {});

}  // namespace ferry::plan
