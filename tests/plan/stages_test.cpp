// Pipeline stage splits: contiguous, complete, in proportion to the ranks' memory.
#include "ferry/plan/stages.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>

#include "ferry/core/error.h"

namespace ferry::plan {
namespace {

using Ranges = std::vector<StageSplit::Range>;

TEST(StageSplit, EqualRanksGetEqualShares) {
  const std::vector<std::uint64_t> layers(24, 100);
  EXPECT_EQ(split_stages(layers, 0, {1, 1}).ranges, (Ranges{{0, 12}, {12, 24}}));
  EXPECT_EQ(split_stages(layers, 0, {5, 5, 5}).ranges, (Ranges{{0, 8}, {8, 16}, {16, 24}}));
}

TEST(StageSplit, RankZeroCountsTheEmbeddingsAndHead) {
  const std::vector<std::uint64_t> layers(10, 100);
  // 400 bytes of ends: rank 0's half of 1400 is 700, i.e. the ends and 3 layers.
  EXPECT_EQ(split_stages(layers, 400, {1, 1}).ranges, (Ranges{{0, 3}, {3, 10}}));
}

TEST(StageSplit, SharesFollowCapacity) {
  const std::vector<std::uint64_t> layers(12, 100);
  EXPECT_EQ(split_stages(layers, 0, {1, 3}).ranges, (Ranges{{0, 3}, {3, 12}}));
  EXPECT_EQ(split_stages(layers, 0, {2, 1, 1}).ranges, (Ranges{{0, 6}, {6, 9}, {9, 12}}));
}

TEST(StageSplit, EveryRankGetsALayerEvenWhenTiny) {
  const std::vector<std::uint64_t> layers(4, 100);
  const StageSplit s = split_stages(layers, 0, {1000, 1, 1});
  EXPECT_EQ(s.ranges, (Ranges{{0, 2}, {2, 3}, {3, 4}}));
}

TEST(StageSplit, PropertyContiguousCompleteAndNearTheIdealCut) {
  std::mt19937 rng(4);
  for (int round = 0; round < 500; ++round) {
    const int n_layers = std::uniform_int_distribution<int>(1, 40)(rng);
    const int ranks = std::uniform_int_distribution<int>(1, std::min(n_layers, 6))(rng);
    std::vector<std::uint64_t> layers;
    std::uint64_t total = 0;
    for (int i = 0; i < n_layers; ++i) {
      layers.push_back(std::uniform_int_distribution<std::uint64_t>(1, 1000)(rng));
      total += layers.back();
    }
    std::vector<std::uint64_t> caps;
    for (int r = 0; r < ranks; ++r)
      caps.push_back(std::uniform_int_distribution<std::uint64_t>(1, 100)(rng));
    const std::uint64_t ends = std::uniform_int_distribution<std::uint64_t>(0, 2000)(rng);
    const StageSplit s = split_stages(layers, ends, caps);
    ASSERT_EQ(s.ranges.size(), static_cast<std::size_t>(ranks));
    std::int64_t next = 0;
    for (const auto& r : s.ranges) {
      ASSERT_EQ(r.begin, next);
      ASSERT_LT(r.begin, r.end);
      next = r.end;
    }
    ASSERT_EQ(next, n_layers);
  }
}

TEST(StageSplit, ImpossibleSplitsAreErrors) {
  EXPECT_THROW(split_stages({100, 100}, 0, {1, 1, 1}), InvalidArgument);
  EXPECT_THROW(split_stages({100, 100}, 0, {}), InvalidArgument);
  try {
    split_stages({100, 100}, 0, {1, 0});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(describe(split_stages({1, 1, 1}, 0, {1, 2})),
            "rank 0: layers 0-0 (+ embeddings, head); rank 1: layers 1-2");
}

// A Llama-shaped checkpoint's headers: embeddings and head of 400 bytes each, a 40-byte norm,
// `n` layers of 200 bytes (two fp32 [5, 5] tensors).
std::vector<TensorInfo> llama_like(int n) {
  std::vector<TensorInfo> infos{{"model.embed_tokens.weight", DType::kF32, {10, 10}},
                                {"model.norm.weight", DType::kF32, {10}},
                                {"lm_head.weight", DType::kF32, {10, 10}}};
  for (int i = 0; i < n; ++i) {
    infos.push_back({fmt::format("model.layers.{}.mlp.up_proj.weight", i), DType::kF32, {5, 5}});
    infos.push_back({fmt::format("model.layers.{}.mlp.down_proj.weight", i), DType::kF32, {5, 5}});
  }
  return infos;
}

TEST(StageSizes, LayersAreTheNumberedBlocksAndTheRestIsTheEnds) {
  const StageSizes sizes = stage_sizes(llama_like(12));
  EXPECT_EQ(sizes.layers_prefix, "model.layers.");
  EXPECT_EQ(sizes.layers, std::vector<std::uint64_t>(12, 200));
  EXPECT_EQ(sizes.ends, 400U + 40U + 400U);
  EXPECT_THROW(
      stage_sizes({{"encoder.weight", DType::kF32, {4}}, {"decoder.weight", DType::kF32, {4}}}),
      Unsupported);
}

TEST(StageSizes, LayerOfNamesTheBlockOfATensor) {
  EXPECT_EQ(layer_of("model.layers.", "model.layers.11.mlp.up_proj.weight"), 11);
  EXPECT_EQ(layer_of("model.layers.", "model.layers.0"), 0);
  EXPECT_EQ(layer_of("model.layers.", "model.embed_tokens.weight"), std::nullopt);
  EXPECT_EQ(layer_of("model.layers.", "model.layers.x.weight"), std::nullopt);
  EXPECT_EQ(layer_of("model.layers.", "lm_head.weight"), std::nullopt);
}

TEST(StageCapacity, CountsEveryDeviceButDisk) {
  MemoryBudget budget;
  budget.set(Placement::gpu(0), Bytes(20));
  budget.set(Placement::cpu(), Bytes(100));
  budget.set(Placement::disk(), Bytes(1000));
  EXPECT_EQ(stage_capacity(budget), 120U);
  EXPECT_EQ(stage_capacity(MemoryBudget{}), 0U);
}

TEST(StageRuntime, AStageReservesTheKvCacheOfItsOwnLayers) {
  const RuntimeOptions whole{.kv_cache_bytes = 2400, .kv_cache_layers = 24, .activation_bytes = 7};
  const RuntimeOptions part = stage_runtime(whole, 6, 24);
  EXPECT_EQ(part.kv_cache_bytes, 600U);
  EXPECT_EQ(part.kv_cache_layers, 6U);
  EXPECT_EQ(part.activation_bytes, 7U);
  EXPECT_EQ(stage_runtime(whole, 24, 24).kv_cache_bytes, 2400U);
  EXPECT_EQ(stage_runtime(RuntimeOptions{}, 3, 24).kv_cache_bytes, 0U);  // headers: none known
}

}  // namespace
}  // namespace ferry::plan
