// Mistral's sliding window: a token attends to the last sliding_window positions only. With one
// decoder layer and rotary (relative) positions, the logits at position i then depend only on
// tokens i - window + 1 .. i, so they equal the logits of that slice run on its own.
#include <gtest/gtest.h>

#include <fstream>

#include "ferry/models/config.h"
#include "ferry/models/kv_cache.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

constexpr std::int64_t kWindow = 3;
constexpr double kTolerance = 1e-4;  // fp32; the slice's rotary angles differ by rounding only

// A one-layer mistral in `dir` with the given sliding_window.
LoadedModel tiny_mistral(const std::filesystem::path& dir, std::optional<std::int64_t> window) {
  make_model(dir, {.arch = "mistral",
                   .hidden_size = 32,
                   .n_layers = 1,
                   .n_heads = 4,
                   .n_kv_heads = 2,
                   .intermediate_size = 64,
                   .seed = 7});
  ModelConfig config = load_config(dir);
  config.sliding_window = window;
  std::ofstream(dir / "config.json") << config_to_json(config);
  LoadModelOptions options;
  options.dispatch.dtype = DType::kF32;
  return load_model(dir, options);
}

// Float32 logits [tokens, vocab] of `ids` run from an empty cache.
at::Tensor logits(CausalLM& model, const std::vector<std::int64_t>& ids) {
  KvCache cache(static_cast<std::size_t>(model.config().n_layers));
  const auto n = static_cast<std::int64_t>(ids.size());
  return model.step({.input_ids = at::tensor(ids, at::kLong).unsqueeze(0),
                     .position_ids = at::arange(n, at::kLong).unsqueeze(0),
                     .attention_mask = at::ones({1, n}, at::kLong)},
                    cache)[0];
}

const std::vector<std::int64_t> kIds{5, 17, 42, 8, 99, 23, 61, 3};

TEST(SlidingWindow, ConfigReadsItForMistralOnly) {
  testing::TempDir dir;
  const LoadedModel loaded = tiny_mistral(dir.path(), kWindow);
  EXPECT_EQ(loaded.config.sliding_window, kWindow);
  ModelConfig qwen = loaded.config;
  qwen.model_type = "qwen2";
  std::string text = config_to_json(qwen);
  text.insert(text.rfind('}'), ", \"sliding_window\": 3");
  EXPECT_EQ(parse_config(text, "q/config.json").sliding_window, std::nullopt);
}

TEST(SlidingWindow, EachPositionSeesOnlyTheLastWindowTokens) {
  testing::TempDir dir;
  LoadedModel loaded = tiny_mistral(dir.path(), kWindow);
  const at::Tensor full = logits(*loaded.model, kIds);
  for (std::size_t i = kWindow - 1; i < kIds.size(); ++i) {
    const std::vector<std::int64_t> slice(
        kIds.begin() + static_cast<std::ptrdiff_t>(i + 1 - kWindow),
        kIds.begin() + static_cast<std::ptrdiff_t>(i + 1));
    const at::Tensor alone = logits(*loaded.model, slice)[kWindow - 1];
    EXPECT_LT((full[static_cast<std::int64_t>(i)] - alone).abs().max().item<double>(), kTolerance)
        << "position " << i;
  }
}

TEST(SlidingWindow, WithoutItEarlierTokensMatter) {
  testing::TempDir dir;
  LoadedModel loaded = tiny_mistral(dir.path(), std::nullopt);
  const at::Tensor full = logits(*loaded.model, kIds);
  const std::vector<std::int64_t> slice(kIds.end() - kWindow, kIds.end());
  const at::Tensor alone = logits(*loaded.model, slice)[kWindow - 1];
  EXPECT_GT((full[-1] - alone).abs().max().item<double>(), 100 * kTolerance);
}

TEST(SlidingWindow, DecodingStepByStepFromTheCacheKeepsTheWindow) {
  testing::TempDir dir;
  LoadedModel loaded = tiny_mistral(dir.path(), kWindow);
  const at::Tensor full = logits(*loaded.model, kIds);
  KvCache cache(1);
  const std::int64_t prefill = 4;
  const std::vector<std::int64_t> head(kIds.begin(), kIds.begin() + prefill);
  loaded.model->step({.input_ids = at::tensor(head, at::kLong).unsqueeze(0),
                      .position_ids = at::arange(prefill, at::kLong).unsqueeze(0),
                      .attention_mask = at::ones({1, prefill}, at::kLong)},
                     cache);
  for (auto i = static_cast<std::int64_t>(prefill); i < static_cast<std::int64_t>(kIds.size());
       ++i) {
    const at::Tensor step = loaded.model->step(
        {.input_ids = at::full({1, 1}, kIds[static_cast<std::size_t>(i)], at::kLong),
         .position_ids = at::full({1, 1}, i, at::kLong),
         .attention_mask = at::ones({1, i + 1}, at::kLong)},
        cache)[0][0];
    EXPECT_LT((full[i] - step).abs().max().item<double>(), 1e-5) << "position " << i;
  }
}

}  // namespace
}  // namespace ferry::models
