#include "ferry/plan/resolve.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/plan/module_sizes.h"

// Note [Staging in the budget]
// Weights that do not rest on their execution device are staged while they are used: read
// buffers and converted copies in host RAM, device copies on the GPU that runs them. The
// prefetcher reserves every staged byte against two budgets, and those budgets are decided here,
// once, from the largest layer the planner will not split — so `ferry plan` shows them, the
// planner keeps them free, and the prefetcher gets exactly them. Per side, a layer costs:
//   host    its bytes in the compute dtype (a --dtype conversion happens at load time, so what
//           streams is converted already), 64-byte alignment per tensor, three pages per tensor
//           read with O_DIRECT (1 MiB or more), and each block's arena rounded to whole pages;
//           with mapped reads, just its bytes;
//   device  its bytes in the compute dtype.
// Once staging is reserved, the planner's own room for the largest layer (Accelerate's, on the
// first GPU and the CPU) is dropped: the staging is that room, and keeping both counted the same
// layer up to three times (e.g. the demo at cpu=40 % placed no layer in RAM).
// Looking ahead stages two layers (the running one and the next); on demand or mapped, one.

namespace ferry::plan {
namespace {

constexpr std::uint64_t kPage = 4096;

std::uint64_t staged_layers(Streaming s) { return s == Streaming::kPrefetch ? 2 : 1; }

struct LayerCost {
  std::uint64_t host = 0;
  std::uint64_t device = 0;
};

// What the prefetcher reserves to stage the largest layer (Note [Staging budget] in
// prefetch.cpp): every tensor in the compute dtype (conversions happen at load time, so what
// streams is already converted); read buffers at 64-byte alignment, or, for O_DIRECT reads
// (tensors of 1 MiB or more), on whole pages with a page of slack each side; each block (one
// module's tensors) on whole pages.
LayerCost largest_layer_cost(const ModuleTree& tree, const PlanOptions& options,
                             const RuntimeOptions& runtime) {
  constexpr std::uint64_t kDirectMin = std::uint64_t{1} << 20;
  const MaximumSizes sizes =
      calculate_maximum_sizes(tree, options.no_split(), options.size_options());
  const std::uint64_t layer = (sizes.largest_layer.size_bits + 7) / 8;
  LayerCost best{.host = layer, .device = layer};
  for (const std::string& name : sizes.largest_layer.names) {
    const auto root = tree.find(name);
    if (!root) continue;
    std::uint64_t host = 0;
    std::uint64_t device = 0;
    std::set<NodeId> blocks;
    for (NodeId id = *root; id < tree.node(*root).end; ++id) {
      const TreeNode& t = tree.node(id);
      if (!t.is_tensor() || !t.counted) continue;
      const int target_bits = options.dtype && t.element.is_floating()
                                  ? element_bits(*options.dtype)
                                  : t.element.bits();
      const std::uint64_t target_bytes =
          (t.numel * static_cast<std::uint64_t>(target_bits) + 7) / 8;
      // Weights are converted when loaded (disk copies are written in the target dtype), so
      // what streams is already in the compute dtype: one read buffer per tensor.
      const std::uint64_t read = target_bytes;
      const bool direct = runtime.direct_io && runtime.streaming != Streaming::kMapped &&
                          read >= kDirectMin;
      const bool mapped = runtime.streaming == Streaming::kMapped;  // no arena: the mapping
      host += direct ? read + 3 * kPage : read + (mapped ? 0 : 64);
      device += target_bytes;
      blocks.insert(t.parent);
    }
    if (runtime.streaming != Streaming::kMapped) {
      host += blocks.size() * kPage;  // each block's arena is rounded up to whole pages
    }
    best.host = std::max(best.host, host);
    best.device = std::max(best.device, device);
  }
  return best;
}

Staging staging_of(const LayerCost& layer, const RuntimeOptions& runtime) {
  const std::uint64_t n = staged_layers(runtime.streaming);
  return {.host_bytes = runtime.staging_bytes.value_or(n * layer.host),
          .device_bytes = runtime.staging_bytes.value_or(n * layer.device)};
}

ExecutionDevice first_device(const MemoryBudget& budget) {
  const std::vector<Placement> gpus = budget.gpus();
  return gpus.empty() ? ExecutionDevice::cpu() : ExecutionDevice::gpu(gpus.front().index());
}

void add(Resolution& r, Placement device, std::string what, std::uint64_t bytes) {
  if (bytes == 0 || !r.budget.contains(device)) return;
  r.reserves.push_back({device, std::move(what), bytes});
  r.reserve.set(device, Bytes(r.reserve.find(device).value_or(Bytes(0)).value() + bytes));
}

// The staging a device can give: `wanted`, or one layer's (`one`, lookahead given up) when the
// budget left after the other reserves cannot hold more; OutOfBudget when it cannot hold one.
std::uint64_t fit_staging(const Resolution& r, Placement device, std::uint64_t wanted,
                          std::uint64_t one, bool user_given) {
  if (!r.budget.contains(device)) return wanted;
  const std::uint64_t budget = r.budget.at(device).value();
  const std::uint64_t taken = r.reserved(device);
  const std::uint64_t left = budget > taken ? budget - taken : 0;
  if (wanted <= left) return wanted;
  if (!user_given && one <= left) {
    log_info("{}: the budget left after reserves ({} bytes) holds one streamed layer but not "
             "two: staging {} bytes, no lookahead",
             device.to_string(), left, one);
    return one;
  }
  const std::uint64_t needed = user_given ? wanted : one;
  throw OutOfBudget(
      fmt::format("{} budget of {} bytes cannot stage the weights that stream through it: the "
                  "largest layer needs {} bytes of staging there{}, and {} bytes are left after "
                  "the other reserves; raise --max-memory {}, or lower --context/--max-new-tokens",
                  device.to_string(), budget, needed,
                  user_given ? " (--prefetch-bytes)" : "", left, device.to_string()),
      ErrorFields{.path = device.to_string(),
                  .expected = fmt::format("at least {} bytes", needed + taken),
                  .actual = fmt::format("{} bytes", budget)});
}

}  // namespace

Staging staging_for(const ModuleTree& tree, const PlanOptions& plan_options,
                    const RuntimeOptions& runtime) {
  return staging_of(largest_layer_cost(tree, plan_options, runtime), runtime);
}

std::uint64_t Resolution::reserved(Placement device) const {
  return reserve.find(device).value_or(Bytes(0)).value();
}

bool streams_weights(const DeviceMap& map) {
  const ExecutionDevice main = main_device(map);
  return std::any_of(map.entries().begin(), map.entries().end(),
                     [&](const auto& entry) { return role_of(entry.second, main).offloaded; });
}

Resolution resolve_and_plan(const ModuleTree& tree, const ResolveOptions& options,
                            const PlanOptions& plan_options) {
  Resolution r;
  r.probed = !options.max_memory.has_value();
  r.budget = r.probed ? get_max_memory() : *options.max_memory;
  r.main_device = first_device(r.budget);
  const RuntimeOptions& rt = options.runtime;

  // Reserves that do not depend on the plan.
  for (const auto& [device, bytes] : options.extra_reserve.entries()) {
    add(r, device, "reserve", bytes.value());
  }
  add(r, r.main_device, "kv cache", rt.kv_cache_bytes);
  add(r, r.main_device, "activations", rt.activation_bytes);
  if (r.probed) add(r, Placement::cpu(), "runtime", rt.footprint_bytes);

  PlanOptions planning = plan_options;
  const auto plan_under = [&](const MemoryBudget& reserve) {
    // The budget is already resolved: the strategy must not probe again.
    return plan_with_strategy(tree,
                              StrategyOptions{.strategy = options.strategy,
                                              .max_memory = r.budget,
                                              .reserve = reserve,
                                              .keep_ten_percent = r.probed},
                              planning);
  };
  r.plan = plan_under(r.reserve);
  // GPUs other than the main one that execute layers hold their layers' KV cache and the
  // activations of the layer running there.
  std::set<Placement> executing;
  for (int round = 0; round < static_cast<int>(r.budget.gpus().size()); ++round) {
    std::uint64_t total_bits = 0;
    for (const DeviceUsage& d : r.plan.plan.devices) total_bits += d.used_bits;
    bool added = false;
    for (const DeviceUsage& d : r.plan.plan.devices) {
      if (!d.placement.is_gpu() || d.placement == r.main_device || d.used_bits == 0 ||
          executing.contains(d.placement)) {
        continue;
      }
      executing.insert(d.placement);
      const std::uint64_t per_layer =
          rt.kv_cache_layers > 0 ? rt.kv_cache_bytes / rt.kv_cache_layers : rt.kv_cache_bytes;
      const double share = total_bits > 0 ? static_cast<double>(d.used_bits) /
                                                 static_cast<double>(total_bits)
                                           : 1.0;
      const std::uint64_t kv = std::min<std::uint64_t>(
          rt.kv_cache_bytes,
          static_cast<std::uint64_t>(share * static_cast<double>(rt.kv_cache_bytes)) + per_layer);
      add(r, d.placement, "kv cache", kv);
      add(r, d.placement, "activations", rt.activation_bytes);
      added = true;
    }
    if (!added) break;
    r.plan = plan_under(r.reserve);
  }
  if (!streams_weights(r.plan.plan.device_map)) return r;

  const LayerCost layer = largest_layer_cost(tree, plan_options, rt);
  const Staging staging = staging_of(layer, rt);
  const Staging one{.host_bytes = layer.host, .device_bytes = layer.device};
  r.host_staging_bytes = fit_staging(r, Placement::cpu(), staging.host_bytes, one.host_bytes,
                                     rt.staging_bytes.has_value());
  r.device_staging_bytes =
      r.main_device.is_gpu() ? fit_staging(r, r.main_device, staging.device_bytes,
                                           one.device_bytes, rt.staging_bytes.has_value())
                             : 0;
  add(r, Placement::cpu(), "staging", r.host_staging_bytes);
  if (r.main_device.is_gpu()) add(r, r.main_device, "staging", r.device_staging_bytes);
  planning.keep_largest_layer_room = false;  // the staging just reserved is that room
  r.plan = plan_under(r.reserve);
  return r;
}

}  // namespace ferry::plan
