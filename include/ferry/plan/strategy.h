#pragma once
// The string device maps of load_checkpoint_and_dispatch ("auto", "balanced", "balanced_low_0",
// "sequential") as a planning strategy: budgets, optionally balanced, then the auto device map.

#include <optional>
#include <string_view>

#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/module_tree.h"

namespace ferry::plan {

enum class Strategy { kAuto, kBalanced, kBalancedLow0, kSequential };

// Throws InvalidArgument "If passing a string for `device_map`, please choose 'auto',
// 'balanced', 'balanced_low_0' or 'sequential'." for anything else.
Strategy parse_strategy(std::string_view text);
std::string_view to_string(Strategy strategy);

struct StrategyOptions {
  Strategy strategy = Strategy::kAuto;
  std::optional<MemoryBudget> max_memory;  // nullopt: probed budgets (and the 90 % rule)
  MemoryBudget reserve;                    // kept free per device (activations, KV cache)
  // Balanced strategies leave 10 % of the GPUs free when the budgets were probed (Accelerate);
  // nullopt: when max_memory is nullopt.
  std::optional<bool> keep_ten_percent;
};

// A plan and the budgets it was made with (after reserve and balancing).
struct StrategyPlan {
  MemoryBudget budget;  // the user's or probed budgets
  MemoryBudget planning_budget;
  DevicePlan plan;
};

// load_checkpoint_and_dispatch's planning: for every strategy but sequential, balanced budgets
// (low_zero for balanced_low_0), then infer_auto_device_map.
StrategyPlan plan_with_strategy(const ModuleTree& tree, const StrategyOptions& strategy,
                                const PlanOptions& options = {});

}  // namespace ferry::plan
