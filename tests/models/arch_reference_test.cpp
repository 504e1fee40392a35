// Phi-3, Gemma 2 and Mixtral against the plain reference (models/plain_reference.h): synthetic
// checkpoints written by make_model, prompt logits within 1e-5 and greedy continuations equal,
// with everything on the CPU, part of the model on disk, and spread over simulated GPUs, the CPU
// and disk (Mixtral: the experts of one layer on all three).
#include <gtest/gtest.h>

#include <set>

#include "ferry/core/devices.h"
#include "ferry/models/generate.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "models/model_fixtures.h"
#include "models/plain_reference.h"

namespace ferry::models {
namespace {

using testing::TempDir;

constexpr double kTolerance = 1e-5;
constexpr std::int64_t kGreedy = 6;

struct Case {
  std::string name;
  MakeModelOptions options;
  std::vector<std::vector<std::int64_t>> prompts;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

MakeModelOptions tiny(const std::string& arch, std::uint64_t seed) {
  return {.arch = arch,
          .hidden_size = 32,
          .n_layers = 2,
          .n_heads = 4,
          .n_kv_heads = 2,
          .intermediate_size = 64,
          .max_position_embeddings = 64,
          .seed = seed,
          .n_merges = 40};
}

const std::vector<std::int64_t> kShort{3, 77, 140, 9, 250, 31};
// Longer than Phi-3's original_max_position_embeddings (64 / 4): LongRoPE's long factors.
const std::vector<std::int64_t> kLong{5, 17, 42, 8, 99,  23, 61, 3,  12, 40,
                                      7, 88, 19, 2, 201, 63, 14, 27, 90, 33};

std::vector<Case> cases() {
  return {{"phi3", tiny("phi3", 11), {kShort, kLong}},
          {"gemma2", tiny("gemma2", 12), {kShort, kLong}},
          {"mixtral", tiny("mixtral", 13), {kShort, kLong}}};
}

// Loads the case's model with `options` (float32) and compares each prompt with the reference.
void expect_matches_plain(const std::filesystem::path& folder, const Case& c,
                          LoadModelOptions options) {
  TempDir offload;
  options.dispatch.dtype = DType::kF32;
  options.dispatch.offload_folder = offload.path();
  LoadedModel loaded = load_model(folder, options);
  for (const auto& prompt : c.prompts) {
    const GenerateResult r =
        generate(*loaded.model, {prompt}, {.max_new_tokens = kGreedy, .keep_prompt_logits = true});
    const at::Tensor expected = testing::plain_logits(folder, prompt);
    ASSERT_EQ(r.prompt_logits[0].sizes(), expected.sizes());
    EXPECT_LT((r.prompt_logits[0] - expected).abs().max().item<double>(), kTolerance)
        << c.name << " prompt of " << prompt.size() << " with map " << loaded.device_map.to_json();
    EXPECT_EQ(r.tokens[0], testing::plain_greedy(folder, prompt, kGreedy))
        << c.name << " prompt of " << prompt.size() << " with map " << loaded.device_map.to_json();
  }
}

class PlainReferenceTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { make_model(dir_.path(), GetParam().options); }
  TempDir dir_;
};

TEST_P(PlainReferenceTest, AllOnCpu) { expect_matches_plain(dir_.path(), GetParam(), {}); }

TEST_P(PlainReferenceTest, SecondLayerOnDisk) {
  LoadModelOptions o;
  o.dispatch.device_map = plan::DeviceMap{{"model.embed_tokens", Placement::cpu()},
                                          {"model.layers.0", Placement::cpu()},
                                          {"model.layers.1", Placement::disk()},
                                          {"model.norm", Placement::cpu()},
                                          {"lm_head", Placement::cpu()}};
  expect_matches_plain(dir_.path(), GetParam(), o);
}

TEST_P(PlainReferenceTest, SimulatedGpusCpuAndDisk) {
  SimGpuScope gpus({Bytes(4'000'000), Bytes(4'000'000)});
  LoadModelOptions o;
  o.dispatch.device_map = plan::DeviceMap{{"model.embed_tokens", Placement::gpu(0)},
                                          {"model.layers.0", Placement::gpu(1)},
                                          {"model.layers.1", Placement::disk()},
                                          {"model.norm", Placement::cpu()},
                                          {"lm_head", Placement::gpu(0)}};
  expect_matches_plain(dir_.path(), GetParam(), o);
}

INSTANTIATE_TEST_SUITE_P(Architectures, PlainReferenceTest, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Mixtral's experts are placed one by one: one layer's experts on a GPU, the CPU and disk.
TEST(MixtralPlacement, ExpertsOfOneLayerOnThreeKindsOfDevice) {
  TempDir dir;
  const Case c = cases()[2];
  make_model(dir.path(), c.options);
  SimGpuScope gpus({Bytes(4'000'000)});
  plan::DeviceMap map{{"model.embed_tokens", Placement::gpu(0)},
                      {"model.layers.0.self_attn", Placement::gpu(0)},
                      {"model.layers.0.block_sparse_moe.gate", Placement::gpu(0)}};
  for (int e = 0; e < 8; ++e) {
    map.set("model.layers.0.block_sparse_moe.experts." + std::to_string(e),
            e < 3   ? Placement::gpu(0)
            : e < 6 ? Placement::cpu()
                    : Placement::disk());
  }
  map.set("model.layers.0.input_layernorm", Placement::gpu(0));
  map.set("model.layers.0.post_attention_layernorm", Placement::cpu());
  map.set("model.layers.1", Placement::disk());
  map.set("model.norm", Placement::gpu(0));
  map.set("lm_head", Placement::cpu());
  LoadModelOptions o;
  o.dispatch.device_map = map;
  expect_matches_plain(dir.path(), c, o);
}

// The planner splits a Mixtral layer into attention and experts (not into q/k/v or w1/w2/w3):
// with a budget that ends inside a layer, the layer's experts land on different devices.
TEST(MixtralPlacement, PlannerPlacesExpertsSeparately) {
  TempDir dir;
  make_model(dir.path(), cases()[2].options);
  LoadModelOptions o{
      .dispatch = {.device_map = plan::Strategy::kSequential, .dtype = DType::kF32},
      .shape = {.batch = 1, .context = 32, .prompt_tokens = 16, .max_new_tokens = 16}};
  plan::MemoryBudget all;
  all.set(Placement::cpu(), Bytes(std::uint64_t{1} << 30));
  o.dispatch.max_memory = all;
  const PlannedModel everything = plan_model(dir.path(), o, plan::Strategy::kSequential);
  EXPECT_EQ(everything.model->no_split_classes(),
            (std::vector<std::string>{"MixtralAttention", "MixtralBlockSparseTop2MLP"}));
  std::uint64_t layer_bytes = 0;
  for (const auto& [name, t] : everything.model->module().state_dict()) {
    if (name.starts_with("model.layers.0.")) layer_bytes += t.numel() * t.element_size();
  }
  // The CPU holds the reserves, the embedding, and about a layer and a half: the budget ends
  // among the experts of the second layer.
  plan::MemoryBudget budget;
  budget.set(Placement::cpu(), Bytes(everything.resolution.reserved(Placement::cpu()) +
                                     layer_bytes * 3 / 2 + 64 * 1024));
  o.dispatch.max_memory = budget;
  const PlannedModel planned = plan_model(dir.path(), o, plan::Strategy::kSequential);
  const plan::DeviceMap& map = planned.resolution.plan.plan.device_map;
  std::set<std::string> placements;
  std::size_t expert_entries = 0;
  for (const auto& [path, where] : map.entries()) {
    EXPECT_EQ(path.find(".w1"), std::string::npos) << path;
    EXPECT_EQ(path.find("q_proj"), std::string::npos) << path;
    if (path.find(".experts.") != std::string::npos) {
      ++expert_entries;
      placements.insert(where.to_string());
    }
  }
  EXPECT_GT(expert_entries, 0u) << map.to_json();
  EXPECT_EQ(placements.size(), 2u) << map.to_json();
}

}  // namespace
}  // namespace ferry::models
