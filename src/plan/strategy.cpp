#include "ferry/plan/strategy.h"

#include "ferry/core/error.h"
#include "ferry/plan/balanced_memory.h"

namespace ferry::plan {

Strategy parse_strategy(std::string_view text) {
  if (text == "auto") return Strategy::kAuto;
  if (text == "balanced") return Strategy::kBalanced;
  if (text == "balanced_low_0") return Strategy::kBalancedLow0;
  if (text == "sequential") return Strategy::kSequential;
  throw InvalidArgument(
      "If passing a string for `device_map`, please choose 'auto', 'balanced', 'balanced_low_0' "
      "or 'sequential'.",
      ErrorFields{.expected = "auto, balanced, balanced_low_0 or sequential",
                  .actual = std::string(text)});
}

std::string_view to_string(Strategy strategy) {
  switch (strategy) {
    case Strategy::kAuto: return "auto";
    case Strategy::kBalanced: return "balanced";
    case Strategy::kBalancedLow0: return "balanced_low_0";
    case Strategy::kSequential: return "sequential";
  }
  return "?";
}

StrategyPlan plan_with_strategy(const ModuleTree& tree, const StrategyOptions& strategy,
                                const PlanOptions& options) {
  StrategyPlan out;
  out.budget = strategy.max_memory ? *strategy.max_memory : get_max_memory();
  out.planning_budget = subtract_reserve(out.budget, strategy.reserve);
  if (strategy.strategy != Strategy::kSequential) {
    out.planning_budget =
        get_balanced_memory(tree, out.planning_budget, options,
                            {.low_zero = strategy.strategy == Strategy::kBalancedLow0,
                             .keep_ten_percent = strategy.keep_ten_percent.value_or(
                                 !strategy.max_memory.has_value())});
  }
  out.plan = plan_device_map(tree, out.planning_budget, options);
  return out;
}

}  // namespace ferry::plan
