#include "ferry/plan/memory_budget.h"

#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/plan/balanced_memory.h"
#include "ferry/plan/strategy.h"
#include "plan/plan_test_util.h"

namespace ferry::plan {
namespace {

using testing::budget;
using testing::cpu;
using testing::gpu;
using testing::ModelForTest;

TEST(GetMaxMemory, OrdersGpusThenCpuThenDisk) {
  const MemoryBudget b = budget({{"disk", "1GB"}, {"cpu", "10GiB"}, {"1", "200"}, {"0", "2GB"}});
  ASSERT_EQ(b.entries().size(), 4U);
  EXPECT_EQ(b.to_string(), "0=2000000000,1=200,cpu=10737418240,disk=1000000000");
  EXPECT_EQ(b.to_json(), R"({"0":2000000000,"1":200,"cpu":10737418240,"disk":1000000000})");
  EXPECT_EQ(MemoryBudget::from_json(b.to_json()), b);
}

TEST(GetMaxMemory, UnknownKeyIsRejectedWithAccelerateMessage) {
  try {
    budget({{"0", "1GB"}, {"gpu", "1GB"}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "Device gpu is not recognized, available devices are integers(for GPU/XPU), "
                 "'mps', 'cpu' and 'disk'");
  }
}

TEST(GetMaxMemory, MalformedAndNegativeSizes) {
  EXPECT_THROW(budget({{"0", "-5"}}), InvalidArgument);
  EXPECT_THROW(budget({{"cpu", "12XB"}}), InvalidArgument);
  try {
    budget({{"cpu", "ten GB"}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "`size` ten GB is not in a valid format. Use an integer for bytes, or a string "
                 "with an unit (like '5.0GB').");
  }
  EXPECT_THROW(parse_budget_entries("0:20GiB"), InvalidArgument);
}

TEST(GetMaxMemory, WarnsForAbsentGpus) {
  LogCapture logs;
  const std::vector<BudgetEntry> entries{{"0", "1GB"}, {"3", "1GB"}};
  const MemoryBudget b = get_max_memory(entries, /*gpu_count=*/2);
  EXPECT_TRUE(b.contains(gpu(3)));
  EXPECT_TRUE(
      logs.contains(LogLevel::kWarning, "Device 3 is not available, available devices are [0, 1]"));
}

TEST(GetMaxMemory, ParsesCliSyntax) {
  const MemoryBudget b =
      get_max_memory(parse_budget_entries("0=20GiB, 1=20GiB,cpu=64GiB"), /*gpu_count=*/2);
  EXPECT_EQ(b.at(gpu(1)), 20_GiB);
  EXPECT_EQ(b.at(cpu()), 64_GiB);
  EXPECT_EQ(subtract_reserve(b, budget({{"0", "30GiB"}, {"cpu", "4GiB"}})).to_string(),
            "0=0,1=21474836480,cpu=64424509440");
}

TEST(GetMaxMemory, ProbedDefaultsHaveCpu) {
  const MemoryBudget b = get_max_memory();
  EXPECT_TRUE(b.contains(cpu()));
  EXPECT_GT(b.at(cpu()).value(), 0U);
}

MemoryBudget balanced(const MemoryBudget& max_memory, bool low_zero = false) {
  ModelForTest model;
  return get_balanced_memory(model, max_memory, {}, low_zero);
}

TEST(GetBalancedMemory, AccelerateCases) {
  EXPECT_EQ(balanced(budget({{"0", "200"}, {"1", "200"}})), budget({{"0", "200"}, {"1", "200"}}));
  EXPECT_EQ(balanced(budget({{"0", "200"}, {"2", "200"}})), budget({{"0", "200"}, {"2", "200"}}));
  EXPECT_EQ(balanced(budget({{"0", "300"}, {"1", "300"}})), budget({{"0", "215"}, {"1", "300"}}));
  EXPECT_EQ(balanced(budget({{"0", "300"}, {"1", "500"}})), budget({{"0", "215"}, {"1", "500"}}));
  EXPECT_EQ(balanced(budget({{"0", "300"}, {"cpu", "1000"}})),
            budget({{"0", "300"}, {"cpu", "1000"}}));
  EXPECT_EQ(balanced(budget({{"0", "0"}, {"1", "300"}, {"2", "300"}})),
            budget({{"0", "0"}, {"1", "215"}, {"2", "300"}}));
  EXPECT_EQ(balanced(budget({{"0", "0"}, {"cpu", "100"}})), budget({{"0", "0"}, {"cpu", "100"}}));
  // A disk key does not crash (Accelerate's torch.device("disk") does).
  EXPECT_EQ(balanced(budget({{"0", "300"}, {"1", "300"}, {"disk", "1"}})),
            budget({{"0", "215"}, {"1", "300"}, {"disk", "1"}}));
}

TEST(GetBalancedMemory, LowZeroAndNoSplitBuffer) {
  // balanced_low_0: per GPU = 236 // 2 + 97 for GPUs 1.., GPU 0 only what is left over.
  EXPECT_EQ(balanced(budget({{"0", "300"}, {"1", "100"}, {"2", "300"}}), /*low_zero=*/true),
            budget({{"0", "0"}, {"1", "100"}, {"2", "300"}}));
  EXPECT_EQ(balanced(budget({{"0", "300"}, {"1", "100"}, {"2", "100"}}), /*low_zero=*/true),
            budget({{"0", "36"}, {"1", "100"}, {"2", "100"}}));
  testing::Holder model("Sequential");
  for (int i = 0; i < 4; ++i) model.add(std::to_string(i), std::make_shared<ModelForTest>());
  // total 944 // 2 = 472; buffer = int(1.25 × 236) = 295 from the ModelForTest blocks.
  EXPECT_EQ(get_balanced_memory(model, budget({{"0", "1000"}, {"1", "1000"}}),
                                {.no_split_module_classes = {"ModelForTest"}}),
            budget({{"0", "767"}, {"1", "1000"}}));
}

TEST(GetBalancedMemory, SingleGpuKeepsTenPercentWhenNotGiven) {
  ModelForTest model;
  const ModuleTree tree = ModuleTree::from_module(model);
  LogCapture logs;
  const MemoryBudget b = get_balanced_memory(tree, budget({{"0", "1000"}, {"cpu", "5000"}}), {},
                                             {.keep_ten_percent = true});
  EXPECT_EQ(b, budget({{"0", "900"}, {"cpu", "5000"}}));
  EXPECT_TRUE(logs.contains(
      LogLevel::kInfo,
      "We will use 90% of the memory on device 0 for storing the model, and 10% for the buffer to "
      "avoid OOM. You can set `max_memory` in to a higher value to use more memory (at your own "
      "risk)."));
  EXPECT_EQ(get_balanced_memory(tree, budget({{"0", "1000"}}), {}, BalanceOptions{}),
            budget({{"0", "1000"}}));
}

TEST(Strategy, ParsesTheFourNamesOnly) {
  EXPECT_EQ(parse_strategy("balanced_low_0"), Strategy::kBalancedLow0);
  EXPECT_EQ(to_string(parse_strategy("sequential")), "sequential");
  try {
    parse_strategy("fastest");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "If passing a string for `device_map`, please choose 'auto', 'balanced', "
                 "'balanced_low_0' or 'sequential'.");
  }
}

TEST(Strategy, BalancedPlanSpreadsOverGpus) {
  ModelForTest model;
  const ModuleTree tree = ModuleTree::from_module(model);
  const StrategyPlan plan = plan_with_strategy(
      tree, {.strategy = Strategy::kBalanced, .max_memory = budget({{"0", "300"}, {"1", "300"}})});
  EXPECT_EQ(plan.planning_budget, budget({{"0", "215"}, {"1", "300"}}));
  EXPECT_EQ(plan.plan.device_map,
            (DeviceMap{{"linear1", gpu(0)}, {"batchnorm", gpu(1)}, {"linear2", gpu(1)}}));
  const StrategyPlan sequential = plan_with_strategy(
      tree,
      {.strategy = Strategy::kSequential, .max_memory = budget({{"0", "300"}, {"1", "300"}})});
  EXPECT_EQ(sequential.plan.device_map, (DeviceMap{{"", gpu(0)}}));
}

}  // namespace
}  // namespace ferry::plan
