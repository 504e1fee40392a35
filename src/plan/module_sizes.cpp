#include "ferry/plan/module_sizes.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "ferry/core/error.h"
#include "plan/size_format.h"

namespace ferry::plan {

std::uint64_t tensor_size_bits(const TreeNode& tensor, const SizeOptions& options) {
  if (!tensor.counted) return 0;
  if (options.buffers_only && tensor.kind != NodeKind::kBuffer) return 0;
  int bits = tensor.element.accounting_bits();
  if (!options.special_dtypes.empty()) {
    auto it = options.special_dtypes.find(tensor.name);
    if (it != options.special_dtypes.end()) {
      return tensor.numel * static_cast<std::uint64_t>(accounting_bits(it->second));
    }
  }
  // compute_module_sizes: the min rule applies to every type but integers and bool (complex
  // and quantized ones included, as Accelerate's name test on "torch.int"/"torch.uint"/"bool").
  if (options.dtype && !tensor.element.is_integral_or_bool()) {
    bits = std::min(bits, accounting_bits(*options.dtype));
  }
  return tensor.numel * static_cast<std::uint64_t>(bits);
}

std::vector<std::uint64_t> compute_node_bits(const ModuleTree& tree, const SizeOptions& options) {
  std::vector<std::uint64_t> bits(tree.size(), 0);
  // Children come after their parent in pre-order, so one backward pass sums subtrees.
  for (std::size_t i = tree.size(); i-- > 0;) {
    const TreeNode& n = tree.nodes()[i];
    if (n.is_tensor()) bits[i] = tensor_size_bits(n, options);
    if (n.parent >= 0) bits[static_cast<std::size_t>(n.parent)] += bits[i];
  }
  return bits;
}

namespace {

// A name is a key of Accelerate's sizes dict when a counted tensor lies in its subtree.
std::vector<char> size_keys(const ModuleTree& tree, const SizeOptions& options) {
  std::vector<char> is_key(tree.size(), 0);
  for (std::size_t i = tree.size(); i-- > 0;) {
    const TreeNode& n = tree.nodes()[i];
    if (n.is_tensor()) {
      is_key[i] = n.counted && (!options.buffers_only || n.kind == NodeKind::kBuffer);
    }
    if (is_key[i] && n.parent >= 0) is_key[static_cast<std::size_t>(n.parent)] = 1;
  }
  return is_key;
}

}  // namespace

ModuleSizes::ModuleSizes(const ModuleTree& tree, std::span<const std::uint64_t> node_bits,
                         std::span<const char> is_key) {
  // Insertion order of Accelerate's dict: for each tensor in named_module_tensors order, its
  // prefixes from the root down, each the first time it is met.
  std::vector<char> seen(tree.size(), 0);
  std::vector<NodeId> chain;
  for (const NodeId t : tree.tensors_in_size_order()) {
    if (!is_key[static_cast<std::size_t>(t)]) continue;
    chain.clear();
    for (NodeId a = t; a >= 0 && !seen[static_cast<std::size_t>(a)]; a = tree.node(a).parent) {
      chain.push_back(a);
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      seen[static_cast<std::size_t>(*it)] = 1;
      index_.emplace(tree.node(*it).name, entries_.size());
      entries_.emplace_back(tree.node(*it).name, node_bits[static_cast<std::size_t>(*it)]);
    }
  }
}

bool ModuleSizes::contains(std::string_view name) const {
  return index_.find(std::string(name)) != index_.end();
}

std::uint64_t ModuleSizes::bits(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? 0 : entries_[it->second].second;
}

std::string ModuleSizes::to_json() const {
  std::string out = "{";
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    out += fmt::format("{}{}: {}", i ? ", " : "", nlohmann::json(entries_[i].first).dump(),
                       format_size_bits(entries_[i].second));
  }
  return out + "}";
}

ModuleSizes ModuleSizes::from_json(std::string_view json) {
  nlohmann::ordered_json parsed;
  try {
    parsed = nlohmann::ordered_json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(fmt::format("module sizes: invalid JSON: {}", e.what()));
  }
  FERRY_CHECK(parsed.is_object(), InvalidArgument, "module sizes: expected a JSON object");
  ModuleSizes sizes;
  for (const auto& [name, value] : parsed.items()) {
    FERRY_CHECK(value.is_number() && value.get<double>() >= 0, InvalidArgument,
                "module sizes: size of '{}' must be a non-negative number of bytes, got {}", name,
                value.dump());
    const auto bits = value.is_number_unsigned()
                          ? value.get<std::uint64_t>() * 8
                          : static_cast<std::uint64_t>(std::llround(value.get<double>() * 8));
    sizes.index_.emplace(name, sizes.entries_.size());
    sizes.entries_.emplace_back(name, bits);
  }
  return sizes;
}

ModuleSizes compute_module_sizes(const ModuleTree& tree, const SizeOptions& options) {
  const std::vector<std::uint64_t> bits = compute_node_bits(tree, options);
  return ModuleSizes(tree, bits, size_keys(tree, options));
}

std::uint64_t compute_module_total_buffer_bits(const ModuleTree& tree, NodeId node,
                                               const SizeOptions& options) {
  SizeOptions buffers = options;
  buffers.buffers_only = true;
  std::uint64_t total = 0;
  for (NodeId i = node; i < tree.node(node).end; ++i) {
    if (tree.node(i).kind == NodeKind::kBuffer) total += tensor_size_bits(tree.node(i), buffers);
  }
  return total;
}

MaxLayer get_max_layer_size(const ModuleTree& tree, std::span<const NodeId> entries,
                            std::span<const std::uint64_t> node_bits,
                            std::span<const char> no_split) {
  MaxLayer result;
  bool any = false;
  // Depth-first over module children only (direct tensors of a split module are ignored).
  std::vector<NodeId> stack(entries.rbegin(), entries.rend());
  while (!stack.empty()) {
    const NodeId id = stack.back();
    stack.pop_back();
    const TreeNode& n = tree.node(id);
    if (n.is_module() && !n.children.empty() && !no_split[static_cast<std::size_t>(id)]) {
      stack.insert(stack.end(), n.children.rbegin(), n.children.rend());
      continue;
    }
    const std::uint64_t s = node_bits[static_cast<std::size_t>(id)];
    if (!any || s > result.size_bits) {
      result.size_bits = s;
      result.names.assign(1, n.name);
      any = true;
    } else if (s == result.size_bits) {
      result.names.push_back(n.name);
    }
  }
  return result;
}

std::vector<NodeId> top_level_entries(const ModuleTree& tree) {
  const TreeNode& root = tree.node(ModuleTree::root());
  std::vector<NodeId> out(root.params);
  out.insert(out.end(), root.children.begin(), root.children.end());
  out.insert(out.end(), root.buffers.begin(), root.buffers.end());
  return out;
}

MaximumSizes calculate_maximum_sizes(const ModuleTree& tree, const NoSplit& no_split,
                                     const SizeOptions& options) {
  const std::vector<std::uint64_t> bits = compute_node_bits(tree, options);
  const std::vector<NodeId> entries = top_level_entries(tree);
  return {.total_bits = bits[0],
          .largest_layer = get_max_layer_size(tree, entries, bits, no_split_flags(tree, no_split))};
}

}  // namespace ferry::plan
