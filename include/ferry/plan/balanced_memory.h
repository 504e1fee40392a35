#pragma once
// get_balanced_memory: budgets that spread a model evenly over the GPUs (Accelerate's
// "balanced" and "balanced_low_0" device maps, spec §2.9).

#include <optional>

#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/module_tree.h"

namespace ferry::nn {
class Module;
}

namespace ferry::plan {

struct BalanceOptions {
  bool low_zero = false;  // GPU 0 gets only what does not fit on the others (balanced_low_0)
  // The budgets were not given by the user: with a single GPU, keep 10 % of it free.
  bool keep_ten_percent = false;
};

// Caps every GPU but the last at total ÷ n_gpus plus a buffer (1.25 × the larger of the first
// no-split block's size and the mean size of the modules holding tensors). Uses `options`'
// no-split classes and patterns, dtype and special dtypes. Deviations: a "disk" key is allowed,
// and low_zero uses the first GPU present rather than assuming ids 0..n-1.
MemoryBudget get_balanced_memory(const ModuleTree& tree, const MemoryBudget& max_memory,
                                 const PlanOptions& options = {}, BalanceOptions balance = {});
// With nullopt: get_max_memory() and the single-GPU 90 % rule, as Accelerate with None.
MemoryBudget get_balanced_memory(const ModuleTree& tree,
                                 const std::optional<MemoryBudget>& max_memory,
                                 const PlanOptions& options = {}, bool low_zero = false);
MemoryBudget get_balanced_memory(nn::Module& model, const std::optional<MemoryBudget>& max_memory,
                                 const PlanOptions& options = {}, bool low_zero = false);

}  // namespace ferry::plan
