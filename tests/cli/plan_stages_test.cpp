// `ferry plan --world-size N` (issue 16) run as a process on a 6-layer model made by `ferry
// make-model`: the split over ranks, each rank's own plan (on the model, as its run plans it, or
// from the headers), per-rank budgets (`rankN:` keys), and the errors of a split that cannot be
// made.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ferry/io/sharded.h"
#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using testing::Result;
using testing::run_ferry;
using testing::run_ferry_stdout;

constexpr int kLayers = 6;
constexpr std::string_view kLayersPrefix = "model.layers.";

// "model.layers.3" or "model.layers.3.mlp" → 3; nullopt for anything else.
std::optional<int> layer_index(const std::string& key) {
  if (!key.starts_with(kLayersPrefix)) return std::nullopt;
  const std::string rest = key.substr(kLayersPrefix.size());
  const std::string number = rest.substr(0, rest.find('.'));
  if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return std::stoi(number);
}

class PlanStages : public ::testing::Test {
 protected:
  void SetUp() override {
    const Result made = run_ferry("make-model --arch llama --layers " + std::to_string(kLayers) +
                                  " --seed 1 --out " + model());
    ASSERT_EQ(made.exit_code, 0) << made.out;
  }
  std::string model() const { return (dir_.path() / "six").string(); }

  // `ferry plan --json ARGS MODEL`, parsed (the test fails on a non-zero exit).
  nlohmann::json plan_json(const std::string& args) const {
    const Result r = run_ferry_stdout("plan --json " + args + " " + model());
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
  }

  // Checks what holds for every split: stages contiguous from layer 0 to the last, none empty;
  // each rank's plan names only its own layers, and the embeddings and head on rank 0 alone.
  static void expect_a_valid_split(const nlohmann::json& j, int world_size) {
    ASSERT_EQ(j.at("world_size"), world_size);
    ASSERT_EQ(j.at("n_layers"), kLayers);
    const auto& stages = j.at("stages");
    ASSERT_EQ(stages.size(), static_cast<std::size_t>(world_size));
    ASSERT_EQ(j.at("ranks").size(), static_cast<std::size_t>(world_size));
    ASSERT_EQ(j.at("capacities").size(), static_cast<std::size_t>(world_size));
    int next = 0;
    for (int r = 0; r < world_size; ++r) {
      const auto& stage = stages.at(static_cast<std::size_t>(r));
      const int begin = stage.at(0).get<int>();
      const int end = stage.at(1).get<int>();
      EXPECT_EQ(begin, next) << "rank " << r;
      EXPECT_LT(begin, end) << "rank " << r;
      next = end;

      const auto& rank = j.at("ranks").at(static_cast<std::size_t>(r));
      EXPECT_EQ(rank.at("rank"), r);
      EXPECT_EQ(rank.at("layers"), stage);
      EXPECT_EQ(rank.at("holds_ends"), r == 0);
      // What the rank holds: exactly its layers, and the ends on rank 0.
      std::vector<std::string> expected;
      if (r == 0) expected.push_back("model.embed_tokens");
      for (int l = begin; l < end; ++l) {
        expected.push_back(std::string(kLayersPrefix) + std::to_string(l));
      }
      if (r == 0) {
        expected.push_back("model.norm");
        expected.push_back("lm_head");
      }
      EXPECT_EQ(rank.at("modules").get<std::vector<std::string>>(), expected) << "rank " << r;
      // Its device map names no other rank's layer, and the ends only on rank 0 (a part held
      // whole on one device is the single key "").
      for (const auto& [key, placement] : rank.at("device_map").items()) {
        if (const std::optional<int> layer = layer_index(key)) {
          EXPECT_TRUE(*layer >= begin && *layer < end) << "rank " << r << " maps " << key;
        }
        if (r > 0) {
          EXPECT_TRUE(key.empty() || key == "model" || key.starts_with("model.layers"))
              << "rank " << r << " maps " << key;
        }
      }
    }
    EXPECT_EQ(next, kLayers);
  }

  ferry::testing::ScratchDir dir_;
};

// The split's mechanics are shown on plans from the headers (--headers-only), which reserve no KV
// cache or activations, so budgets of a few hundred KB still plan.
// Budgets so small that each rank offloads part of its stage to disk: its map then names its
// modules (a part held whole on one device would be the single key "").
TEST_F(PlanStages, TwoRanksSplitContiguouslyAndEachPlansOnlyItsLayers) {
  const nlohmann::json j = plan_json("--headers-only --world-size 2 --io mmap --max-memory cpu=500KB");
  expect_a_valid_split(j, 2);
  EXPECT_EQ(j.at("capacities"), nlohmann::json::array({500000, 500000}));
  for (const auto& rank : j.at("ranks")) {
    EXPECT_EQ(rank.at("max_memory"), "cpu=500KB");
    EXPECT_EQ(rank.at("devices").at("cpu").at("budget_bytes"), 500000);
    EXPECT_EQ(rank.at("planned_from"), "headers");
  }
  const auto& rank_0 = j.at("ranks").at(0).at("device_map");
  EXPECT_TRUE(rank_0.contains("model.embed_tokens")) << rank_0.dump();
  EXPECT_TRUE(rank_0.contains("lm_head")) << rank_0.dump();
  const auto& rank_1 = j.at("ranks").at(1).at("device_map");
  EXPECT_TRUE(rank_1.contains("model.layers.2")) << rank_1.dump();
  EXPECT_TRUE(rank_1.contains("model.layers.5")) << rank_1.dump();
}

// `ferry launch --nproc 3 -- plan` is the split over the launched world, printed once (by rank
// 0), the same as `ferry plan --world-size 3`; a single launched rank plans as one process.
TEST_F(PlanStages, UnderALauncherRankZeroPrintsTheSplitOverTheLaunchedWorld) {
  const std::string args = "--json --headers-only --io mmap --max-memory cpu=500KB " + model();
  const Result launched = run_ferry_stdout("launch --nproc 3 -- plan " + args);
  ASSERT_EQ(launched.exit_code, 0) << launched.out;
  const nlohmann::json j = nlohmann::json::parse(launched.out);  // one document, not three
  expect_a_valid_split(j, 3);
  const nlohmann::json direct = plan_json("--headers-only --world-size 3 --io mmap --max-memory cpu=500KB");
  EXPECT_EQ(j.at("stages"), direct.at("stages"));
  for (std::size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(j.at("ranks").at(r).at("device_map"), direct.at("ranks").at(r).at("device_map"))
        << "rank " << r;
  }

  // One rank holds the KV cache of every layer: a budget that holds it.
  const Result one =
      run_ferry_stdout("launch --nproc 1 -- plan --json --max-memory cpu=20MB " + model());
  ASSERT_EQ(one.exit_code, 0) << one.out;
  const nlohmann::json single = nlohmann::json::parse(one.out);
  EXPECT_FALSE(single.contains("world_size")) << one.out;
  EXPECT_EQ(single.at("device_map"), plan_json("--max-memory cpu=20MB").at("device_map"));
}

// A launcher's environment that is incomplete is named, not planned as a single process.
TEST_F(PlanStages, AnIncompleteLauncherEnvironmentIsNamed) {
  const Result r = testing::run_ferry_redirected("plan --max-memory cpu=20MB " + model(), "2>&1",
                                                 "env -u RANK WORLD_SIZE=2 ");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("environment variable RANK is not set: WORLD_SIZE=2")) << r.out;
}

// A model folder's ranks are planned on the model, as each rank's run plans its part: the KV
// cache of its own layers and the activations reserved (a plan from headers knows no config and
// reserves neither), --quantize honoured, and rank 0's map the one the launched run uses.
TEST_F(PlanStages, AModelFoldersRanksArePlannedAsTheirRunsPlanThem) {
  // Budgets that make each rank offload part of its stage once its reserves are counted.
  ferry::testing::ScratchDir offload;
  const std::string shape = "--max-memory cpu=600KB --context 16 --max-new-tokens 6 --offload-folder " +
                            offload.path().string();
  const nlohmann::json on_model = plan_json("--world-size 2 " + shape);
  const nlohmann::json on_headers = plan_json("--headers-only --world-size 2 " + shape);
  const nlohmann::json single = plan_json("--max-memory cpu=20MB --context 16 --max-new-tokens 6");
  expect_a_valid_split(on_model, 2);
  expect_a_valid_split(on_headers, 2);
  EXPECT_EQ(on_model.at("stages"), on_headers.at("stages"));
  EXPECT_EQ(on_model.at("planned_from"), "model");
  EXPECT_EQ(on_headers.at("planned_from"), "headers");

  const auto reserve = [](const nlohmann::json& plan, const std::string& what) {
    return plan.at("devices").at("cpu").at("reserves").value(what, std::uint64_t{0});
  };
  const std::uint64_t kv_whole = reserve(single, "kv cache");
  ASSERT_GT(kv_whole, 0U) << single.dump();
  std::uint64_t kv_sum = 0;
  for (std::size_t r = 0; r < 2; ++r) {
    const auto& rank = on_model.at("ranks").at(r);
    EXPECT_EQ(rank.at("planned_from"), "model");
    const auto& layers = rank.at("layers");
    const std::uint64_t kv = reserve(rank, "kv cache");
    // Its own layers' share of the whole model's cache, exactly.
    EXPECT_EQ(kv, kv_whole / kLayers * (layers.at(1).get<std::uint64_t>() -
                                        layers.at(0).get<std::uint64_t>()))
        << "rank " << r;
    EXPECT_GT(reserve(rank, "activations"), 0U) << "rank " << r;
    EXPECT_EQ(reserve(on_headers.at("ranks").at(r), "kv cache"), 0U) << "rank " << r;
    kv_sum += kv;
  }
  EXPECT_EQ(kv_sum, kv_whole);

  // Rank 0's map is the one `ferry launch -- run` uses with the same flags.
  const Result ran = testing::run_ferry_redirected(
      "launch --nproc 2 --timeout 60 -- run " + model() +
          " --prompt-ids 1,2,3,4 --ignore-eos --json --no-progress " + shape,
      "2>/dev/null", "timeout 240 ");
  ASSERT_EQ(ran.exit_code, 0) << ran.out;
  const nlohmann::json run = nlohmann::json::parse(ran.out);
  EXPECT_EQ(run.at("pipeline").at("stages"), on_model.at("stages"));
  const auto& rank_0_map = on_model.at("ranks").at(0).at("device_map");
  EXPECT_GT(on_model.at("ranks").at(0).at("disk_bytes").get<std::uint64_t>(), 0U) << rank_0_map;
  EXPECT_EQ(run.at("device_map"), rank_0_map);

  // Quantized ranks count int8 weights: fewer bytes than the stored float32 ones.
  const nlohmann::json quantized = plan_json("--world-size 2 --quantize int8 " + shape);
  for (std::size_t r = 0; r < 2; ++r) {
    EXPECT_LT(quantized.at("ranks").at(r).at("total_bytes").get<std::uint64_t>(),
              on_model.at("ranks").at(r).at("total_bytes").get<std::uint64_t>())
        << "rank " << r;
  }
  // From headers, --quantize is refused, naming why.
  const Result refused = run_ferry("plan --headers-only --world-size 2 --quantize int8 " + model());
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_THAT(refused.out, HasSubstr("with --headers-only")) << refused.out;
}

TEST_F(PlanStages, ThreeRanksEachWithItsOwnBudget) {
  const nlohmann::json j = plan_json(
      "--headers-only --world-size 3 --io mmap "
      "--max-memory cpu=500KB,rank1:cpu=400KB,rank2:cpu=600KB,rank2:disk=1GB");
  expect_a_valid_split(j, 3);
  EXPECT_EQ(j.at("capacities"), nlohmann::json::array({500000, 400000, 600000}));
  const auto& ranks = j.at("ranks");
  EXPECT_EQ(ranks.at(0).at("max_memory"), "cpu=500KB");
  EXPECT_EQ(ranks.at(1).at("max_memory"), "cpu=400KB");
  EXPECT_EQ(ranks.at(2).at("max_memory"), "cpu=600KB,disk=1GB");
  EXPECT_EQ(ranks.at(0).at("devices").at("cpu").at("budget_bytes"), 500000);
  EXPECT_EQ(ranks.at(1).at("devices").at("cpu").at("budget_bytes"), 400000);
  EXPECT_EQ(ranks.at(2).at("devices").at("cpu").at("budget_bytes"), 600000);
}

TEST_F(PlanStages, ALargerBudgetForRankOneGivesItMoreLayers) {
  const auto layers_of_rank_1 = [](const nlohmann::json& j) {
    const auto& stage = j.at("stages").at(1);
    return stage.at(1).get<int>() - stage.at(0).get<int>();
  };
  const nlohmann::json even = plan_json("--headers-only --world-size 2 --io mmap --max-memory cpu=600KB");
  const nlohmann::json more =
      plan_json("--headers-only --world-size 2 --io mmap --max-memory cpu=600KB,rank1:cpu=1200KB");
  expect_a_valid_split(even, 2);
  expect_a_valid_split(more, 2);
  EXPECT_GT(layers_of_rank_1(more), layers_of_rank_1(even))
      << even.at("stages").dump() << " vs " << more.at("stages").dump();
  EXPECT_EQ(more.at("ranks").at(0).at("max_memory"), "cpu=600KB");
  EXPECT_EQ(more.at("ranks").at(1).at("max_memory"), "cpu=1200KB");
  EXPECT_EQ(more.at("ranks").at(1).at("devices").at("cpu").at("budget_bytes"), 1200000);
}

TEST_F(PlanStages, TextShowsTheSplitThenEachRanksPlan) {
  const Result r =
      run_ferry("plan --headers-only --world-size 2 --io mmap "
                "--max-memory cpu=600KB,rank1:cpu=1200KB " + model());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("pipeline: rank 0: layers 0-"));
  EXPECT_THAT(r.out, HasSubstr("(+ embeddings, head); rank 1: layers "));
  EXPECT_THAT(r.out, HasSubstr("(--max-memory cpu=1200KB)"));
  EXPECT_THAT(r.out, HasSubstr(", rank 1 (layers "));
}

TEST_F(PlanStages, OneRankIsTheSingleProcessPlan) {
  const nlohmann::json j =
      plan_json("--headers-only --world-size 1 --max-memory cpu=1GB,rank0:cpu=2GB");
  EXPECT_FALSE(j.contains("ranks"));
  EXPECT_EQ(j.at("devices").at("cpu").at("budget_bytes"), 2000000000);
}

TEST_F(PlanStages, BadWorldSizesAndRankKeysAreNamed) {
  struct Case {
    std::string args;
    std::string message;
  };
  const std::vector<Case> cases{
      {"--world-size 0", "ferry plan --world-size 0: expected 1 or more ranks"},
      {"--world-size 7", "cannot be split over 7 ranks"},
      {"--world-size 2 --max-memory cpu=1GB,rank2:cpu=2GB",
       "max_memory entry 'rank2:cpu=2GB': rank 2 is not in a world of 2 rank(s)"},
      {"--world-size 2 --max-memory rankx:cpu=2GB", "max_memory entry 'rankx:cpu=2GB'"},
      {"--max-memory cpu=1GB,rank1:cpu=2GB",
       "--max-memory entry 'rank1:cpu=2GB': rank keys need a distributed run: ferry launch or "
       "--world-size"},
  };
  for (const Case& c : cases) {
    const Result r = run_ferry("plan " + c.args + " " + model());
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_THAT(r.out, HasSubstr(c.message)) << c.args;
  }
}

TEST(PlanStagesErrors, ACheckpointWithoutNumberedBlocksCannotBeSplit) {
  ferry::testing::ScratchDir dir;
  io::save_sharded(dir.path() / "flat",
                   {{"encoder.weight", at::zeros({8, 8})}, {"decoder.weight", at::zeros({8, 8})}});
  const Result r = run_ferry("plan --world-size 2 " + (dir.path() / "flat").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("no repeated numbered blocks"));
}

}  // namespace
}  // namespace ferry::cli
