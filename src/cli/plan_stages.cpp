// `ferry plan --world-size N`: a checkpoint spread over N pipeline ranks (issue 16), split by its
// headers as a distributed run splits it: which layers each rank holds, and each rank's own plan
// (from the headers here, LibTorch-free; on the model built on meta by the engine's planner,
// plan_model.cpp).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/json_output.h"
#include "cli/plan_command.h"
#include "ferry/core/bytes.h"
#include "ferry/core/error.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/stages.h"

namespace ferry::cli {
namespace {

// One rank of the split, planned.
struct RankPlan {
  int rank = 0;
  plan::StageSplit::Range layers;
  std::string max_memory;  // the rank's --max-memory text, plain ("" when probed)
  std::uint64_t capacity_bytes = 0;
  HeaderPlan planned;
};

// The tensors rank `rank` holds: those of its layers, and rank 0 also the ends (embeddings, final
// norm, head) — every tensor plan::stage_sizes does not count in a layer.
std::vector<TensorInfo> stage_tensors(const std::vector<TensorInfo>& infos,
                                      const plan::StageSizes& sizes,
                                      const plan::StageSplit::Range& range, int rank) {
  std::vector<TensorInfo> out;
  for (const TensorInfo& t : infos) {
    const std::optional<std::int64_t> layer = plan::layer_of(sizes.layers_prefix, t.name);
    if (layer ? (*layer >= range.begin && *layer < range.end) : rank == 0) out.push_back(t);
  }
  return out;
}

// What a rank holds, in model order: its layers ("model.layers.3") and, on rank 0, the modules of
// the ends' tensors ("model.embed_tokens", "model.norm", "lm_head"). Shown beside its device
// map, which names a part held on one device by its common prefix ("" for all of it).
std::vector<std::string> held_modules(const plan::ModuleTree& tree, const plan::StageSizes& sizes) {
  std::vector<std::string> out;
  for (const plan::TreeNode& node : tree.nodes()) {
    if (!node.is_tensor()) continue;
    std::string module;
    if (const std::optional<std::int64_t> layer = plan::layer_of(sizes.layers_prefix, node.name)) {
      module = fmt::format("{}{}", sizes.layers_prefix, *layer);
    } else {
      const std::size_t dot = node.name.rfind('.');
      module = dot == std::string::npos ? node.name : node.name.substr(0, dot);
    }
    if (std::find(out.begin(), out.end(), module) == out.end()) out.push_back(std::move(module));
  }
  return out;
}

// `f()`, its InvalidArgument or Unsupported rethrown naming the checkpoint and the world size.
template <typename F>
auto with_context(const PlanCommandOptions& o, F&& f) {
  const auto context = [&o](const Error& e) {
    return std::make_pair(
        fmt::format("ferry plan --world-size {} {}: {}", *o.world_size, o.checkpoint, e.what()),
        ErrorFields{.path = e.path(),
                    .file = o.checkpoint,
                    .expected = e.fields().expected,
                    .actual = e.fields().actual});
  };
  try {
    return f();
  } catch (const Unsupported& e) {
    auto [what, fields] = context(e);
    throw Unsupported(what, std::move(fields));
  } catch (const InvalidArgument& e) {
    auto [what, fields] = context(e);
    throw InvalidArgument(what, std::move(fields));
  }
}

std::string layers_text(const plan::StageSplit::Range& range, int rank) {
  return fmt::format("layers {}-{}{}", range.begin, range.end - 1,
                     rank == 0 ? " (+ embeddings, head)" : "");
}

}  // namespace

int plan_stages(const PlanCommandOptions& o, const StagePlanner& planner) {
  const auto start = std::chrono::steady_clock::now();
  if (!planner) check_header_flags(o);
  FERRY_ASSERT(o.world_size && *o.world_size > 1, "plan_stages: world size {}",
               o.world_size.value_or(0));
  const int world_size = *o.world_size;
  const std::vector<TensorInfo> infos = read_tensor_infos(o.checkpoint);
  const plan::StageSizes sizes = with_context(o, [&] { return plan::stage_sizes(infos); });

  // Each rank's budgets and capacity, as the rank computes them in a distributed run
  // (engine::stage_capacity): its own budgets, else this machine's probed ones.
  std::vector<RankPlan> ranks(static_cast<std::size_t>(world_size));
  std::vector<std::uint64_t> capacities;
  std::optional<plan::MemoryBudget> probed;
  for (int r = 0; r < world_size; ++r) {
    RankPlan& rank = ranks[static_cast<std::size_t>(r)];
    PlacementFlags flags = o.placement;
    flags.rank = r;
    rank.rank = r;
    rank.max_memory = max_memory_text(flags);
    std::optional<plan::MemoryBudget> budget = max_memory_of(flags);
    if (!budget) {
      if (!probed) probed = plan::get_max_memory();
      budget = probed;
    }
    rank.capacity_bytes = plan::stage_capacity(*budget);
    capacities.push_back(rank.capacity_bytes);
  }
  // The split a distributed run makes (engine::agree_on_pipeline): the same sizes, the same call.
  const plan::StageSplit split =
      with_context(o, [&] { return plan::split_stages(sizes.layers, sizes.ends, capacities); });

  const auto n_layers = static_cast<std::int64_t>(sizes.layers.size());
  StagePlanner by_headers;
  if (!planner) {
    const plan::ModuleTree whole = plan::ModuleTree::from_tensors(infos);
    const HeaderPlanBasis basis = header_plan_basis(whole, infos, o.placement);
    const plan::RuntimeOptions runtime = runtime_options(o.placement);
    by_headers = [basis, runtime, n_layers](const StagePart& part) {
      return plan_header_tree(part.tree, part.tensors.size(), basis, part.flags,
                              plan::stage_runtime(runtime, part.end - part.begin, n_layers));
    };
  }
  for (RankPlan& rank : ranks) {
    rank.layers = split.ranges[static_cast<std::size_t>(rank.rank)];
    StagePart part{.rank = rank.rank,
                   .begin = rank.layers.begin,
                   .end = rank.layers.end,
                   .flags = o.placement,
                   .tensors = stage_tensors(infos, sizes, rank.layers, rank.rank),
                   .tree = nullptr};
    part.flags.rank = rank.rank;
    part.tree = std::make_shared<const plan::ModuleTree>(plan::ModuleTree::from_tensors(part.tensors));
    rank.planned = planner ? planner(part) : by_headers(part);
    if (!rank.planned.tree) rank.planned.tree = part.tree;
    rank.planned.view.part =
        fmt::format("rank {} (layers {}-{}{})", rank.rank, rank.layers.begin, rank.layers.end - 1,
                    rank.rank == 0 ? ", embeddings, head" : "");
  }
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  if (o.json) {
    nlohmann::ordered_json j = json_header("plan");
    j["checkpoint"] = o.checkpoint;
    j["planned_from"] = ranks.front().planned.view.source;
    j["world_size"] = world_size;
    j["layers_prefix"] = sizes.layers_prefix;
    j["n_layers"] = n_layers;
    nlohmann::ordered_json stages = nlohmann::ordered_json::array();
    for (const plan::StageSplit::Range& range : split.ranges) {
      stages.push_back({range.begin, range.end});
    }
    j["stages"] = stages;
    j["capacities"] = capacities;
    nlohmann::ordered_json out_ranks = nlohmann::ordered_json::array();
    for (const RankPlan& rank : ranks) {
      nlohmann::ordered_json one = nlohmann::ordered_json::object();
      one["rank"] = rank.rank;
      one["layers"] = {rank.layers.begin, rank.layers.end};
      one["holds_ends"] = rank.rank == 0;
      one["modules"] = held_modules(*rank.planned.tree, sizes);
      one["max_memory"] = rank.max_memory;
      one["capacity_bytes"] = rank.capacity_bytes;
      const nlohmann::ordered_json plan =
          plan_json(o, rank.planned.view, rank.planned.elapsed_ms, rank.planned.estimates);
      for (const auto& [key, value] : plan.items()) one[key] = value;
      out_ranks.push_back(std::move(one));
    }
    j["ranks"] = out_ranks;
    j["plan_ms"] = elapsed_ms;
    print_json(j);
    return 0;
  }

  fmt::print(
      "ferry plan: {} over {} ranks ({} decoder layers {}N; split from the headers in "
      "{:.1f} ms)\n",
      o.checkpoint, world_size, n_layers, sizes.layers_prefix, elapsed_ms);
  fmt::print("  pipeline: {}\n", plan::describe(split));
  for (const RankPlan& rank : ranks) {
    fmt::print("  rank {}: {}, capacity {} ({})\n", rank.rank, layers_text(rank.layers, rank.rank),
               format_bytes(rank.capacity_bytes),
               rank.max_memory.empty() ? "probed" : "--max-memory " + rank.max_memory);
  }
  for (const RankPlan& rank : ranks) {
    fmt::print("\n");
    print_plan_text(o, rank.planned.view, rank.planned.elapsed_ms, rank.planned.estimates);
  }
  return 0;
}

}  // namespace ferry::cli
