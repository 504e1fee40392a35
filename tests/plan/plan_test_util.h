#pragma once
// Helpers shared by the plan tests: budgets from Accelerate-style dicts and small module trees
// assembled by hand (test-only containers with named children).

#include <initializer_list>
#include <memory>
#include <string>

#include "ferry/nn/linear.h"
#include "ferry/nn/module.h"
#include "ferry/nn/norm.h"
#include "ferry/plan/device_map.h"
#include "ferry/plan/memory_budget.h"
#include "nn/test_models.h"

namespace ferry::plan::testing {

using nn::testing::ModelForTest;

// A module of any class name whose children and tensors a test registers directly.
class Holder : public nn::Module {
 public:
  explicit Holder(std::string class_name = "Holder") : Module(std::move(class_name)) {}
  template <class M>
  std::shared_ptr<M> add(std::string name, std::shared_ptr<M> child) {
    return register_module(std::move(name), std::move(child));
  }
};

// max_memory as Accelerate's dict literal: budget({{"0", "200"}, {"cpu", "1GB"}}).
inline MemoryBudget budget(std::initializer_list<BudgetEntry> entries) {
  return get_max_memory(std::vector<BudgetEntry>(entries), /*gpu_count=*/8);
}

inline Placement gpu(int i) { return Placement::gpu(i); }
inline Placement cpu() { return Placement::cpu(); }
inline Placement disk() { return Placement::disk(); }

// Ties `to` (a parameter path) to the slot of `from`.
inline void tie(nn::Module& model, std::string_view to, std::string_view from) {
  model.set_slot(to, model.find_tensor(from).slot());
}

}  // namespace ferry::plan::testing

namespace ferry::plan {
// gtest prints device maps as their JSON.
inline void PrintTo(const DeviceMap& map, std::ostream* os) { *os << map.to_json(); }
}  // namespace ferry::plan
