#include "ferry/plan/balanced_memory.h"

#include <algorithm>
#include <map>

#include "ferry/core/log.h"
#include "ferry/plan/no_split.h"

namespace ferry::plan {
namespace {

// Accelerate's buffer: the size of the first no-split block met in the sizes' key order, per
// class (or, for path patterns, per pattern); the largest of those. In bits.
std::uint64_t first_no_split_block_bits(const ModuleTree& tree, const ModuleSizes& sizes,
                                        std::span<const std::uint64_t> bits,
                                        const NoSplit& no_split) {
  std::map<std::string, std::uint64_t, std::less<>> seen;
  const std::size_t groups = no_split.module_classes.size() + no_split.patterns.size();
  for (const auto& [name, size] : sizes.entries()) {
    if (name.empty()) continue;
    const NodeId id = *tree.find(name);
    const TreeNode& n = tree.node(id);
    if (!n.is_module()) continue;
    std::string group;
    if (std::find(no_split.module_classes.begin(), no_split.module_classes.end(), n.class_name) !=
        no_split.module_classes.end()) {
      group = "class:" + n.class_name;
    } else {
      for (const std::string& p : no_split.patterns) {
        if (matches_module_pattern(p, n.name)) {
          group = "pattern:" + p;
          break;
        }
      }
    }
    if (group.empty() || seen.contains(group)) continue;
    seen.emplace(group, bits[static_cast<std::size_t>(id)]);
    if (seen.size() == groups) break;
  }
  std::uint64_t out = 0;
  for (const auto& [group, b] : seen) out = std::max(out, b);
  return out;
}

// Mean size of the "final modules" (modules holding tensors with no such module below), in
// whole bytes as int(sum / count).
std::uint64_t mean_final_module_bytes(const ModuleTree& tree, const ModuleSizes& sizes,
                                      std::span<const std::uint64_t> bits) {
  std::vector<char> has_module_key_child(tree.size(), 0);
  std::vector<NodeId> module_keys;
  for (const auto& [name, size] : sizes.entries()) {
    const NodeId id = *tree.find(name);
    if (!tree.node(id).is_module()) continue;
    module_keys.push_back(id);
    if (const NodeId parent = tree.node(id).parent; parent >= 0) {
      has_module_key_child[static_cast<std::size_t>(parent)] = 1;
    }
  }
  std::uint64_t sum_bits = 0;
  std::uint64_t count = 0;
  for (const NodeId id : module_keys) {
    if (id == ModuleTree::root() || has_module_key_child[static_cast<std::size_t>(id)]) continue;
    sum_bits += bits[static_cast<std::size_t>(id)];
    ++count;
  }
  return sum_bits / (8 * std::max<std::uint64_t>(count, 1));
}

}  // namespace

MemoryBudget get_balanced_memory(const ModuleTree& tree, const MemoryBudget& max_memory,
                                 const PlanOptions& options, BalanceOptions balance) {
  MemoryBudget budget = max_memory;
  std::vector<Placement> gpus;
  for (const Placement& p : budget.gpus()) {
    if (budget.at(p).value() > 0) gpus.push_back(p);
  }
  if (gpus.empty()) return budget;
  bool low_zero = balance.low_zero;
  if (gpus.size() == 1) {
    low_zero = false;
    if (balance.keep_ten_percent) {
      const Placement first = budget.gpus().front();
      budget.set(
          first,
          Bytes(static_cast<std::uint64_t>(static_cast<double>(budget.at(first).value()) * 0.9)));
      log_info(
          "We will use 90% of the memory on device {} for storing the model, and 10% for the "
          "buffer to avoid OOM. You can set `max_memory` in to a higher value to use more memory "
          "(at your own risk).",
          first.to_string());
    }
  }

  const SizeOptions size_options = options.size_options();
  const std::vector<std::uint64_t> bits = compute_node_bits(tree, size_options);
  const ModuleSizes sizes = compute_module_sizes(tree, size_options);
  const std::uint64_t total_bits = bits[0];
  const std::uint64_t n = low_zero ? gpus.size() - 1 : gpus.size();
  std::uint64_t per_gpu = total_bits / (8 * n);

  const NoSplit no_split = options.no_split();
  const std::uint64_t block_bits =
      no_split.empty() ? 0 : first_no_split_block_bits(tree, sizes, bits, no_split);
  const std::uint64_t mean_bits = mean_final_module_bytes(tree, sizes, bits) * 8;
  // int(1.25 * max(buffer, mean)) in bytes, exactly: 1.25 × bits ÷ 8 = 5 × bits ÷ 32.
  per_gpu += std::max(block_bits, mean_bits) * 5 / 32;

  // Every GPU but the last is capped; the last keeps its whole budget as a safety margin.
  for (std::size_t i = 0; i + 1 < gpus.size(); ++i) {
    const Bytes own = budget.at(gpus[i]);
    const Bytes cap = low_zero && i == 0 ? own : Bytes(per_gpu);
    budget.set(gpus[i], std::min(cap, own));
  }
  if (low_zero) {
    std::uint64_t others = 0;
    for (std::size_t i = 1; i < gpus.size(); ++i) others += budget.at(gpus[i]).value();
    const std::uint64_t total_bytes = total_bits / 8;
    const std::uint64_t min_zero = total_bytes > others ? total_bytes - others : 0;
    budget.set(gpus[0], std::min(Bytes(min_zero), budget.at(gpus[0])));
  }
  return budget;
}

MemoryBudget get_balanced_memory(const ModuleTree& tree,
                                 const std::optional<MemoryBudget>& max_memory,
                                 const PlanOptions& options, bool low_zero) {
  return get_balanced_memory(tree, max_memory ? *max_memory : get_max_memory(), options,
                             {.low_zero = low_zero, .keep_ten_percent = !max_memory.has_value()});
}

}  // namespace ferry::plan
