// Sampling and the stopping rules of generation.
#include "ferry/models/generate.h"

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <set>

#include "ferry/core/error.h"
#include "ferry/models/registry.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

using testing::fixture;

TEST(Sampler, GreedyIsArgmaxAndTopKOneIsGreedy) {
  const at::Tensor logits = at::tensor({0.1f, 2.0f, 0.5f, 1.9f}).view({1, 4});
  EXPECT_EQ(Sampler({}).next(logits, {{}}).item<std::int64_t>(), 1);
  EXPECT_EQ(Sampler({.temperature = 5.0, .top_k = 1}).next(logits, {{}}).item<std::int64_t>(), 1);
  // top_p keeps the smallest set reaching p: here only token 1.
  const at::Tensor peaked = at::tensor({0.0f, 9.0f, 0.0f, 0.0f}).view({1, 4});
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Sampler({.temperature = 1.0, .top_p = 0.5, .seed = static_cast<std::uint64_t>(i)})
                  .next(peaked, {{}})
                  .item<std::int64_t>(),
              1);
  }
}

TEST(Sampler, MinPDropsTokensFarLessLikelyThanTheTop) {
  // Probabilities about 0.64, 0.24, 0.09, 0.03: min_p 0.3 keeps tokens 0 and 1 only.
  const at::Tensor logits = at::tensor({3.0f, 2.0f, 1.0f, 0.0f}).view({1, 4});
  std::set<std::int64_t> drawn;
  for (int i = 0; i < 200; ++i) {
    drawn.insert(Sampler({.temperature = 1.0, .min_p = 0.3, .seed = static_cast<std::uint64_t>(i)})
                     .next(logits, {{}})
                     .item<std::int64_t>());
  }
  EXPECT_EQ(drawn, (std::set<std::int64_t>{0, 1}));
  // min_p 1 keeps only the most likely token.
  EXPECT_EQ(Sampler({.temperature = 1.0, .min_p = 1.0}).next(logits, {{}}).item<std::int64_t>(), 0);
}

TEST(Sampler, RepetitionPenaltyAndSeed) {
  const at::Tensor logits = at::tensor({0.1f, 2.0f, 0.5f, 1.9f}).view({1, 4});
  EXPECT_EQ(Sampler({.repetition_penalty = 1.2}).next(logits, {{1}}).item<std::int64_t>(), 3);
  const at::Tensor flat = at::zeros({1, 1000});
  Sampler a({.temperature = 1.0, .seed = 7});
  Sampler b({.temperature = 1.0, .seed = 7});
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(a.next(flat, {{}}).item<std::int64_t>(), b.next(flat, {{}}).item<std::int64_t>());
}

TEST(Sampler, RejectsBadOptions) {
  auto message = [](SamplingOptions o) {
    try {
      Sampler s(o);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(message({.temperature = -1}), "temperature must be >= 0 (0 is greedy), got -1");
  EXPECT_EQ(message({.top_k = -2}), "top_k must be >= 0 (0 keeps all), got -2");
  EXPECT_EQ(message({.top_p = 0}), "top_p must be in (0, 1], got 0");
  EXPECT_EQ(message({.min_p = 1.5}), "min_p must be in [0, 1], got 1.5");
  EXPECT_EQ(message({.repetition_penalty = 0}), "repetition_penalty must be > 0, got 0");
}

class GenerateStops : public ::testing::Test {
 protected:
  LoadedModel loaded_ = load_model(fixture("llama_gqa"), {.dispatch = {.dtype = DType::kF32}});
  std::vector<std::int64_t> prompt_{3, 77, 140, 9, 250, 31, 5, 200};
  std::vector<std::int64_t> greedy_ =
      generate(*loaded_.model, {prompt_}, {.max_new_tokens = 8}).tokens[0];
};

TEST_F(GenerateStops, EosStopsAndIsKept) {
  const GenerateResult r =
      generate(*loaded_.model, {prompt_}, {.max_new_tokens = 8, .eos_token_ids = {greedy_[2]}});
  EXPECT_EQ(r.tokens[0], std::vector<std::int64_t>(greedy_.begin(), greedy_.begin() + 3));
  EXPECT_EQ(r.finish_reasons[0], "eos");
}

TEST_F(GenerateStops, StopStringsStreamingAndSampling) {
  std::vector<std::int64_t> streamed;
  const GenerateResult r =
      generate(*loaded_.model, {prompt_},
               {.max_new_tokens = 8,
                .stop_strings = {"<4>"},
                .decode =
                    [](const std::vector<std::int64_t>& ids) {
                      return "<" + std::to_string(ids.size()) + ">";
                    },
                .on_token = [&](std::size_t, std::int64_t t) { streamed.push_back(t); }});
  EXPECT_EQ(r.tokens[0].size(), 4u);
  EXPECT_EQ(r.finish_reasons[0], "stop_string");
  EXPECT_EQ(streamed, r.tokens[0]);
  const GenerateOptions sampled{.max_new_tokens = 6,
                                .sampling = {.temperature = 1.0, .top_k = 20, .seed = 3}};
  EXPECT_EQ(generate(*loaded_.model, {prompt_}, sampled).tokens[0],
            generate(*loaded_.model, {prompt_}, sampled).tokens[0]);
  EXPECT_THROW(generate(*loaded_.model, {prompt_}, {.stop_strings = {"x"}}), InvalidArgument);
}

TEST_F(GenerateStops, MaxPositionsEndsGeneration) {
  const std::vector<std::int64_t> long_prompt(62, 7);
  const GenerateResult r = generate(*loaded_.model, {long_prompt}, {.max_new_tokens = 10});
  // Positions 62 and 63 are fed; the token chosen at 63 is returned but never fed.
  EXPECT_EQ(r.tokens[0].size(), 3u);
  EXPECT_EQ(r.finish_reasons[0], "max_positions");
}

// Note [Inference mode]: the steps run in it, the caller's mode is restored, and the prompt's
// logits come back as an inference tensor (documented on GenerateResult::prompt_logits).
TEST_F(GenerateStops, StepsRunInInferenceModeAndTheCallersModeIsRestored) {
  ASSERT_FALSE(c10::InferenceMode::is_enabled());
  std::vector<bool> during;
  const GenerateResult r = generate(
      *loaded_.model, {prompt_},
      {.max_new_tokens = 3,
       .on_token = [&](std::size_t,
                       std::int64_t) { during.push_back(c10::InferenceMode::is_enabled()); },
       .keep_prompt_logits = true});
  EXPECT_EQ(during, std::vector<bool>(3, true));
  EXPECT_FALSE(c10::InferenceMode::is_enabled());
  ASSERT_TRUE(r.prompt_logits.defined());
  EXPECT_TRUE(r.prompt_logits.is_inference());
  EXPECT_FALSE(r.prompt_logits.clone().is_inference());  // the way to a tensor to change
}

// Note [Where a step's time goes]: the decode's weight products, counted per step. The fixture's
// float32 llama (2 layers) makes four passes a layer (q, k and v together; o; gate and up
// together; down) and one for lm_head, each reading its weights once.
TEST_F(GenerateStops, DecodeReportsItsWeightProducts) {
  const GenerateResult r = generate(*loaded_.model, {prompt_}, {.max_new_tokens = 5});
  ASSERT_EQ(r.decode_steps, 4);
  const std::int64_t layers = loaded_.config.n_layers;
  EXPECT_EQ(r.decode_product_calls, r.decode_steps * (4 * layers + 1));
  std::int64_t step_bytes = 0;
  for (const nn::NamedTensor& p : loaded_.model->module().named_parameters()) {
    if (p.name.ends_with("_proj.weight") || p.name == "lm_head.weight") {
      step_bytes += p.tensor().nbytes();
    }
  }
  EXPECT_GT(step_bytes, 0);
  EXPECT_EQ(r.decode_product_bytes, r.decode_steps * step_bytes);
  EXPECT_GT(r.decode_product_seconds, 0.0);
  EXPECT_LT(r.decode_product_seconds, r.decode_seconds);
  // No decode step, nothing counted: the prefill's products are not the decode's.
  const GenerateResult one = generate(*loaded_.model, {prompt_}, {.max_new_tokens = 1});
  EXPECT_EQ(one.decode_steps, 0);
  EXPECT_EQ(one.decode_product_calls, 0);
  EXPECT_EQ(one.decode_product_seconds, 0.0);
}

}  // namespace
}  // namespace ferry::models
