// Planning from checkpoint headers alone, and properties of plans on random trees.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <iostream>
#include <random>

#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/estimate.h"
#include "ferry/plan/strategy.h"
#include "plan/plan_test_util.h"

namespace ferry::plan {
namespace {

using testing::budget;
using testing::cpu;
using testing::disk;
using testing::gpu;

std::vector<TensorInfo> llama_headers(int n_layers, std::int64_t hidden, std::int64_t ffn,
                                      std::int64_t vocab) {
  std::vector<TensorInfo> out{{"model.embed_tokens.weight", DType::kBF16, {vocab, hidden}},
                              {"model.norm.weight", DType::kBF16, {hidden}},
                              {"lm_head.weight", DType::kBF16, {vocab, hidden}}};
  for (int i = 0; i < n_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      out.push_back({p + "self_attn." + proj + ".weight", DType::kBF16, {hidden, hidden}});
    }
    for (const char* proj : {"gate_proj", "up_proj"}) {
      out.push_back({p + "mlp." + proj + ".weight", DType::kBF16, {ffn, hidden}});
    }
    out.push_back({p + "mlp.down_proj.weight", DType::kBF16, {hidden, ffn}});
    out.push_back({p + "input_layernorm.weight", DType::kBF16, {hidden}});
    out.push_back({p + "post_attention_layernorm.weight", DType::kBF16, {hidden}});
  }
  return out;
}

TEST(HeaderPlan, RepeatedBlocksStayWholeAndHeadComesLast) {
  const auto infos = llama_headers(4, 8, 16, 32);  // blocks of 656 bf16 = 1312 bytes
  const ModuleTree tree = ModuleTree::from_tensors(infos);
  const PlanOptions options{.no_split_patterns = infer_no_split_patterns(tree)};
  const DeviceMap map =
      infer_auto_device_map(tree, budget({{"0", "3200"}, {"1", "3000"}, {"cpu", "3000"}}), options);
  EXPECT_EQ(map, (DeviceMap{{"model.embed_tokens", gpu(0)},
                            {"model.layers.0", gpu(0)},
                            {"model.layers.1", gpu(1)},
                            {"model.layers.2", gpu(1)},
                            {"model.layers.3", cpu()},
                            {"model.norm", cpu()},
                            {"lm_head", cpu()}}));
  EXPECT_TRUE(map.placement_of("model.layers.0.mlp.up_proj.weight").has_value());
}

TEST(HeaderPlan, EstimateTableLikeAccelerate) {
  const ModuleTree tree = ModuleTree::from_tensors(llama_headers(2, 8, 16, 32));
  const auto rows = estimate_memory(tree, {.patterns = infer_no_split_patterns(tree)});
  ASSERT_EQ(rows.size(), 4U);
  EXPECT_EQ(rows[0].total_bytes, 4.0 * (2 * 656 + 2 * 256 + 8));
  EXPECT_EQ(rows[0].largest_layer_bytes, 4.0 * 656);
  EXPECT_EQ(rows[3].total_bytes, rows[0].total_bytes / 8);
  EXPECT_FALSE(rows[2].training_bytes.has_value());
  EXPECT_EQ(convert_bytes(236, true), "236 bytes");
  EXPECT_EQ(convert_bytes(118.0), "118.0 bytes");
  EXPECT_EQ(convert_bytes(1.5 * 1024 * 1024 * 1024), "1.5 GB");
  EXPECT_EQ(convert_bytes(1000.0 * 1024), "1000.0 KB");
  const std::string table = format_estimate_table("tiny", rows);
  EXPECT_NE(table.find("Memory Usage for loading `tiny`"), std::string::npos);
  EXPECT_NE(table.find("│  int4 │"), std::string::npos);
  EXPECT_NE(table.find("N/A"), std::string::npos);
}

// Random trees: every tensor placed exactly once, budgets respected, reservation honoured.
TEST(PlanProperties, RandomTrees) {
  std::mt19937 rng(1234);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<TensorInfo> infos;
    const int n_top = pick(1, 6);
    for (int a = 0; a < n_top; ++a) {
      const int n_mid = pick(0, 4);
      if (n_mid == 0) {
        infos.push_back({fmt::format("m{}.weight", a), DType::kF32, {std::int64_t{pick(1, 40)}}});
        continue;
      }
      for (int b = 0; b < n_mid; ++b) {
        for (int t = 0; t < pick(1, 3); ++t) {
          infos.push_back(
              {fmt::format("m{}.{}.t{}", a, b, t), DType::kF16, {std::int64_t{pick(1, 60)}}});
        }
      }
    }
    const ModuleTree tree = ModuleTree::from_tensors(infos);
    const MemoryBudget max_memory = budget({{"0", std::to_string(pick(0, 300))},
                                            {"1", std::to_string(pick(0, 300))},
                                            {"cpu", std::to_string(pick(0, 300))}});
    const DevicePlan plan =
        plan_device_map(tree, max_memory, {.no_split_patterns = {trial % 2 ? "m*" : "none"}});
    // Coverage: no key is another key's prefix and every tensor has a placement.
    for (const auto& [key, p] : plan.device_map.entries()) {
      for (const auto& [other, q] : plan.device_map.entries()) {
        if (key != other) {
          ASSERT_FALSE(other.starts_with(key + ".") || key.empty()) << key << " / " << other;
        }
      }
    }
    std::map<Placement, std::uint64_t> used;
    for (const TensorInfo& t : infos) {
      const auto p = plan.device_map.placement_of(t.name);
      ASSERT_TRUE(p.has_value()) << t.name;
      used[*p] += t.size_bytes();
    }
    // Budgets: what went to a GPU or cpu fits; the first GPU and cpu keep room for the largest
    // leaf that went further down.
    std::map<Placement, std::uint64_t> largest_below;
    for (const TensorInfo& t : infos) {
      const Placement p = *plan.device_map.placement_of(t.name);
      const std::string leaf = t.name.substr(0, t.name.rfind('.'));
      std::uint64_t leaf_bytes = 0;
      for (const TensorInfo& u : infos) {
        if (u.name.starts_with(leaf + ".")) leaf_bytes += u.size_bytes();
      }
      for (const Placement& main : {gpu(0), cpu()}) {
        if (main < p) largest_below[main] = std::max(largest_below[main], leaf_bytes);
      }
    }
    for (const auto& [p, b] : max_memory.entries()) {
      ASSERT_LE(used[p], b.value()) << p.to_string() << " trial " << trial;
    }
    for (const Placement& main : {gpu(0), cpu()}) {
      if (used[main] > 0) {
        ASSERT_LE(used[main] + largest_below[main], max_memory.at(main).value())
            << main.to_string() << " trial " << trial;
      }
    }
    std::uint64_t total = 0;
    for (const DeviceUsage& d : plan.devices) total += d.used_bytes();
    std::uint64_t expected = 0;
    for (const TensorInfo& t : infos) expected += t.size_bytes();
    ASSERT_EQ(total, expected);
  }
}

}  // namespace
}  // namespace ferry::plan
