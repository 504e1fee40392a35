#include "plan/allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>

#include "ferry/core/log.h"
#include "plan/size_format.h"

namespace ferry::plan {
namespace {

// Budgets are compared in bits; anything beyond 2^59 bytes is unlimited in practice.
constexpr std::uint64_t kHugeBytes = std::uint64_t{1} << 59;

std::int64_t budget_bits(Bytes b) {
  return static_cast<std::int64_t>(std::min(b.value(), kHugeBytes) * 8);
}

std::string sz(std::int64_t bits) { return format_size_bits(bits); }

}  // namespace

Allocator::Allocator(const ModuleTree& tree, const MemoryBudget& max_memory,
                     const PlanOptions& options)
    : tree_(tree),
      max_memory_(max_memory),
      options_(options),
      size_options_(options.size_options()),
      bits_(compute_node_bits(tree, size_options_)),
      no_split_(no_split_flags(tree, options.no_split())),
      queue_(tree.size()),
      max_layer_(tree, bits_, no_split_) {
  // _init_infer_auto_device_map: the budget's devices in order, disk last and unlimited (also
  // when the user gives it a budget); the first GPU and cpu keep room for the largest layer.
  for (const auto& [p, b] : max_memory.entries()) {
    devices_.push_back(p);
    limit_bits_.push_back(p.is_disk() ? std::nullopt : std::optional(budget_bits(b)));
  }
  if (!max_memory.contains(Placement::disk())) {
    devices_.push_back(Placement::disk());
    limit_bits_.push_back(std::nullopt);
  }
  const auto gpus = max_memory.gpus();
  for (const Placement& p : devices_) {
    is_main_.push_back(p.is_cpu() || (!gpus.empty() && p == gpus.front()));
  }
  used_bits_.assign(devices_.size(), 0);
  buffer_bits_.assign(devices_.size(), 0);
  for (const auto& group : tree.tied_groups()) {
    auto& dotted = tied_dotted_.emplace_back();
    for (const NodeId p : group) dotted.push_back(name(p) + ".");
  }
}

void Allocator::emit_trace(const std::string& line) const {
  if (options_.trace != nullptr) {
    *options_.trace << line << '\n';
  } else {
    std::cout << line << '\n';
  }
}

std::string Allocator::names_of(std::span<const NodeId> ids) const {
  std::vector<std::string> names;
  names.reserve(ids.size());
  for (const NodeId id : ids) names.push_back(name(id));
  return py_list(names);
}

bool Allocator::can_split(NodeId id) const {
  const TreeNode& n = tree_.node(id);
  return n.is_module() && !n.children.empty() && !no_split_[static_cast<std::size_t>(id)];
}

std::vector<NodeId> Allocator::split_entries(NodeId id) const {
  // Deviation (docs/deviations.md): Accelerate enqueues only direct parameters and children,
  // dropping the module's own buffers from the map (spec §6 #2).
  const TreeNode& n = tree_.node(id);
  std::vector<NodeId> out(n.params);
  out.insert(out.end(), n.children.begin(), n.children.end());
  out.insert(out.end(), n.buffers.begin(), n.buffers.end());
  return out;
}

DevicePlan Allocator::run() {
  queue_.push_front(top_level_entries(tree_));
  // The first computation counts top-level tensors as layers; later ones only modules.
  max_layer_.recompute(queue_, /*include_tensors=*/true);
  std::size_t current = 0;

  while (!queue_.empty()) {
    const NodeId id = queue_.pop_front();
    trace("\nTreating module {}.", name(id));
    max_layer_.drop(id);
    if (max_layer_.empty()) max_layer_.recompute(queue_, /*include_tensors=*/false);
    const auto module_bits = static_cast<std::int64_t>(bits_[static_cast<std::size_t>(id)]);

    const Ties ties = tied_dotted_.empty() ? Ties{} : relevant_ties(id);
    if (!ties.groups.empty()) {
      std::vector<std::vector<std::string>> groups;
      for (const std::size_t g : ties.groups) {
        auto& names = groups.emplace_back();
        for (const NodeId p : tree_.tied_groups()[g]) names.push_back(name(p));
      }
      trace("  Found the relevant tied param groups {}", py_nested_list(groups));
    }
    if (!ties.params.empty()) {
      trace("  So those parameters need to be taken into account {}", names_of(ties.params));
    }

    const Placement device = devices_[current];
    const bool limited = limit_bits_[current].has_value();
    std::int64_t current_max = limited ? *limit_bits_[current] : 0;
    std::int64_t reserved = 0;
    if (is_main_[current] && options_.keep_largest_layer_room) {
      reserved = static_cast<std::int64_t>(max_layer_.size_bits());
      current_max -= reserved;
    }
    const SizeWithTies with_ties =
        size_with_ties(ties, module_bits, [this](NodeId p) { return holder_in_queue(p); });
    std::int64_t& used = used_bits_[current];

    // The entry and the entries holding its tied partners fit: place them all.
    if (!limited || used + with_ties.bits <= current_max) {
      std::string line = fmt::format("Putting {}", name(id));
      line += with_ties.holders.empty() ? fmt::format(" (size={})", sz(module_bits))
                                        : fmt::format(" and {}", names_of(with_ties.holders));
      if (limited) line += fmt::format(" (available={})", sz(current_max - used));
      trace("{} on {}.", line, device.to_string());
      used += with_ties.bits;
      map_.set(name(id), device);
      placed_.emplace_back(id, current);
      for (const NodeId holder : with_ties.holders) {
        queue_.remove(holder);
        map_.set(name(holder), device);
        placed_.emplace_back(holder, current);
      }
      if (!options_.offload_buffers && tree_.node(id).is_module()) {
        buffer_bits_[current] += compute_module_total_buffer_bits(tree_, id, size_options_);
      }
      continue;
    }

    // The entry alone fits: try splitting one of the tied modules instead.
    if (!ties.params.empty() && used + module_bits <= current_max) {
      trace("Not enough space on {} to put {} and {} (space available {}, needed size {}).",
            device.to_string(), name(id), names_of(with_ties.holders), sz(current_max - used),
            sz(with_ties.bits));
      bool split = false;
      for (const NodeId holder : with_ties.holders) {
        if (!can_split(holder)) continue;
        trace("Splitting {}.", name(holder));
        queue_.replace(holder, split_entries(holder));
        queue_.push_front(id);
        max_layer_.recompute(queue_, /*include_tensors=*/false);
        split = true;
        break;
      }
      if (split) continue;
      trace("None of the tied module can be split, going to the next device.");
    }

    // The entry itself does not fit: split it, or go to the next device.
    if (used + module_bits >= current_max) {
      trace("Not enough space on {} to put {} (space available {}, module size {}).",
            device.to_string(), name(id), sz(current_max - used), sz(module_bits));
      if (can_split(id)) {
        trace("Splitting {}.", name(id));
        queue_.push_front(split_entries(id));
        max_layer_.recompute(queue_, /*include_tensors=*/false);
        continue;
      }
      trace("This module cannot be split, going to the next device.");
    }

    // Nothing is on this device yet: look for a smaller module that fits first.
    if (used == 0 && options_.fallback_allocation && limited) {
      const std::int64_t limit =
          *limit_bits_[current] -
          std::max(static_cast<std::int64_t>(max_layer_.size_bits()), with_ties.bits);
      if (const auto found = fallback_allocate(limit - used)) {
        queue_.push_front(id);
        queue_.push_front(*found);
        continue;
      }
    }

    if (used == 0) min_required_.emplace_back(current, with_ties.bits + reserved);
    used += reserved;
    ++current;
    queue_.push_front(id);
  }

  DevicePlan plan;
  finish(plan);
  return plan;
}

void Allocator::finish(DevicePlan& plan) const {
  // Weights per device, from what was placed (tied entries counted once, as in the sizes).
  std::vector<std::uint64_t> weights(devices_.size(), 0);
  for (const auto& [node, device] : placed_)
    weights[device] += bits_[static_cast<std::size_t>(node)];
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    plan.devices.push_back(
        {.placement = devices_[d],
         .budget_bytes = devices_[d].is_disk() ? std::nullopt : max_memory_.find(devices_[d]),
         .used_bits = weights[d]});
  }
  plan.device_map = options_.clean_result ? clean_device_map(map_) : map_;

  // Buffers of modules on cpu or disk stay on the execution device when not offloaded.
  std::uint64_t offloaded = 0;
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    if (!devices_[d].is_gpu()) offloaded += buffer_bits_[d];
  }
  plan.offloaded_buffer_bits = offloaded;
  if (offloaded > 0 && !options_.offload_buffers) {
    bool fits = false;
    for (std::size_t d = 0; d < devices_.size(); ++d) {
      if (!devices_[d].is_gpu()) continue;
      const std::int64_t used = std::max<std::int64_t>(used_bits_[d], 0);
      if (*limit_bits_[d] >= static_cast<std::int64_t>(offloaded) + used) fits = true;
    }
    if (!max_memory_.gpus().empty() && !fits) {
      plan.buffers_fit_no_gpu = true;
      log_warning(
          "Current model requires {} bytes of buffer for offloaded layers, which seems does not "
          "fit any GPU's remaining memory. If you are experiencing a OOM later, please consider "
          "using offload_buffers=True.",
          sz(static_cast<std::int64_t>(offloaded)));
    }
  }

  if (!min_required_.empty()) {
    std::string lines;
    for (const auto& [d, bits] : min_required_) {
      lines += fmt::format("  - {}: {} bytes required\n", devices_[d].to_string(), sz(bits));
      plan.min_required_bits.emplace_back(devices_[d], static_cast<std::uint64_t>(bits));
    }
    log_info(
        "Based on the current allocation process, no modules could be assigned to the following "
        "devices due to insufficient memory:\n{}These minimum requirements are specific to this "
        "allocation attempt and may vary. Consider increasing the available memory for these "
        "devices to at least the specified minimum, or adjusting the model config.",
        lines);
  }
}

}  // namespace ferry::plan
