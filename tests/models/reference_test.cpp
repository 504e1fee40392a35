// ferry's architectures against tools/reference_logits.py (plain PyTorch, from transformers'
// model definitions): prompt logits within 1e-5 absolute (fp32; logits are O(0.5)), greedy
// continuations identical — under every kind of device map.
#include <gtest/gtest.h>

#include "ferry/core/devices.h"
#include "ferry/models/generate.h"
#include "ferry/models/registry.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

using testing::fixture;
using testing::read_tensor;
using testing::TempDir;

constexpr double kTolerance = 1e-5;

struct Reference {
  std::vector<std::int64_t> prompt;
  at::Tensor logits;
  std::vector<std::int64_t> greedy;
};

Reference reference(const std::string& name) {
  const auto file = fixture(name) / "reference.safetensors";
  const at::Tensor prompt = read_tensor(file, "prompt_ids");
  const at::Tensor greedy = read_tensor(file, "greedy_ids");
  return {std::vector<std::int64_t>(prompt.data_ptr<std::int64_t>(),
                                    prompt.data_ptr<std::int64_t>() + prompt.numel()),
          read_tensor(file, "logits"),
          std::vector<std::int64_t>(greedy.data_ptr<std::int64_t>(),
                                    greedy.data_ptr<std::int64_t>() + greedy.numel())};
}

// Loads `name` in float32 with `options`, then checks logits and the greedy continuation.
void expect_matches_reference(const std::string& name, LoadModelOptions options = {}) {
  const Reference ref = reference(name);
  TempDir offload;
  options.dispatch.dtype = DType::kF32;
  options.dispatch.offload_folder = offload.path();
  LoadedModel loaded = load_model(fixture(name), options);
  const GenerateResult r = generate(
      *loaded.model, {ref.prompt},
      {.max_new_tokens = static_cast<std::int64_t>(ref.greedy.size()), .keep_prompt_logits = true});
  ASSERT_EQ(r.prompt_logits.sizes(), ref.logits.sizes());
  EXPECT_LT((r.prompt_logits - ref.logits).abs().max().item<double>(), kTolerance)
      << name << " with map " << loaded.device_map.to_json();
  EXPECT_EQ(r.tokens.front(), ref.greedy) << name;
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, AllOnCpu) { expect_matches_reference(GetParam()); }

TEST_P(ReferenceTest, PartlyOnDisk) {
  LoadModelOptions o;
  plan::MemoryBudget budget;
  budget.set(Placement::cpu(), Bytes(60'000));  // about half of the float32 weights
  o.dispatch.device_map = plan::Strategy::kSequential;
  o.dispatch.max_memory = budget;
  expect_matches_reference(GetParam(), o);
}

TEST_P(ReferenceTest, SimulatedGpusWithCpuOffload) {
  SimGpuScope gpus({Bytes(40'000), Bytes(40'000)});
  LoadModelOptions o;
  plan::MemoryBudget budget;
  budget.set(Placement::gpu(0), Bytes(30'000));
  budget.set(Placement::gpu(1), Bytes(30'000));
  budget.set(Placement::cpu(), Bytes(1'000'000));
  o.dispatch.device_map = plan::Strategy::kSequential;
  o.dispatch.max_memory = budget;
  expect_matches_reference(GetParam(), o);
}

INSTANTIATE_TEST_SUITE_P(Architectures, ReferenceTest,
                         ::testing::Values("llama_gqa", "llama_tied", "qwen2", "gpt2"));

TEST(ReferenceDeviceMaps, DiskMapReallyOffloads) {
  TempDir offload;
  plan::MemoryBudget budget;
  budget.set(Placement::cpu(), Bytes(60'000));
  LoadModelOptions o;
  o.dispatch.device_map = plan::Strategy::kSequential;
  o.dispatch.max_memory = budget;
  o.dispatch.dtype = DType::kF32;
  o.dispatch.offload_folder = offload.path();
  const LoadedModel loaded = load_model(fixture("llama_gqa"), o);
  const auto p = loaded.device_map.placements();
  EXPECT_NE(std::find(p.begin(), p.end(), Placement::disk()), p.end())
      << loaded.device_map.to_json();
  // The decoder block is the no-split class: no map entry inside a layer.
  for (const auto& [path, where] : loaded.device_map.entries()) {
    EXPECT_EQ(path.find("self_attn"), std::string::npos) << path;
  }
}

TEST(ReferenceBatch, LeftPaddedBatchEqualsSeparateRuns) {
  LoadedModel loaded = load_model(fixture("llama_gqa"), {.dispatch = {.dtype = DType::kF32}});
  const std::vector<std::int64_t> a{3, 77, 140, 9, 250, 31, 5, 200};
  const std::vector<std::int64_t> b{12, 40, 7};
  const GenerateOptions g{.max_new_tokens = 6, .keep_prompt_logits = true};
  const GenerateResult both = generate(*loaded.model, {a, b}, g);
  const GenerateResult only_b = generate(*loaded.model, {b}, g);
  EXPECT_EQ(both.tokens[1], only_b.tokens[0]);
  const auto greedy = reference("llama_gqa").greedy;
  EXPECT_EQ(both.tokens[0], std::vector<std::int64_t>(greedy.begin(), greedy.begin() + 6));
  // Row b's logits sit at the right end of the padded prompt.
  EXPECT_LT(
      (both.prompt_logits[1].narrow(0, 5, 3) - only_b.prompt_logits[0]).abs().max().item<double>(),
      kTolerance);
}

TEST(ReferenceBatch, GptLeftPaddingUsesPositionsOfRealTokens) {
  LoadedModel loaded = load_model(fixture("gpt2"), {.dispatch = {.dtype = DType::kF32}});
  const GenerateOptions g{.max_new_tokens = 4};
  const GenerateResult both = generate(*loaded.model, {{3, 77, 140, 9, 250}, {12, 40}}, g);
  EXPECT_EQ(both.tokens[1], generate(*loaded.model, {{12, 40}}, g).tokens[0]);
}

}  // namespace
}  // namespace ferry::models
