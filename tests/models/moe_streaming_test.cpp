// Mixtral offloaded to disk streams only the experts its tokens were routed to (Note [Routed
// experts]): a decode step reads the non-expert weights and top_k of n_experts experts per layer,
// against every expert when decoder layers are placed and loaded whole (Accelerate's blocks).
#include <gtest/gtest.h>

#include <iostream>

#include "ferry/dispatch/prefetch.h"
#include "ferry/models/kv_cache.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

using testing::TempDir;

constexpr std::int64_t kLayers = 4;
constexpr std::int64_t kHidden = 64;
constexpr std::int64_t kExpertWidth = 256;
constexpr std::int64_t kSteps = 8;

struct Streamed {
  double bytes_per_token = 0;
  std::vector<std::int64_t> tokens;
};

// Loads `folder` with every decoder layer on disk and decodes kSteps tokens after a prompt;
// returns the bytes read from files per decode step (prefetcher counters, loads settled).
Streamed decode_from_disk(const std::filesystem::path& folder, bool whole_layers) {
  TempDir offload;
  LoadModelOptions o{.dispatch = {.offload_folder = offload.path(), .dtype = DType::kF32}};
  plan::DeviceMap map{{"model.embed_tokens", Placement::cpu()}};
  for (std::int64_t i = 0; i < kLayers; ++i) {
    map.set("model.layers." + std::to_string(i), Placement::disk());
  }
  map.set("model.norm", Placement::cpu());
  map.set("lm_head", Placement::cpu());
  o.dispatch.device_map = map;
  if (whole_layers) {
    // Accelerate's way: the decoder layer is the unit placed and loaded.
    o.dispatch.no_split_module_classes = {"MixtralDecoderLayer"};
    o.dispatch.preload_module_classes = {"MixtralDecoderLayer"};
  }
  // Room to stage whole layers either way: the budget decides what is prefetched early, not
  // what is read.
  o.dispatch.prefetch->host_budget_bytes = std::uint64_t{64} << 20;
  LoadedModel loaded = load_model(folder, o);
  const auto prefetcher = dispatch::model_prefetcher(loaded.model->module());
  EXPECT_NE(prefetcher, nullptr);
  KvCache cache(kLayers);
  std::vector<std::int64_t> ids{3, 77, 140, 9};
  auto step = [&](const std::vector<std::int64_t>& new_ids) {
    const auto past = static_cast<std::int64_t>(cache.length());
    const auto n = static_cast<std::int64_t>(new_ids.size());
    const at::Tensor logits =
        loaded.model->step({.input_ids = at::tensor(new_ids, at::kLong).unsqueeze(0),
                            .position_ids = at::arange(past, past + n, at::kLong).unsqueeze(0),
                            .attention_mask = at::ones({1, past + n}, at::kLong)},
                           cache);
    return logits[0][-1].argmax().item<std::int64_t>();
  };
  Streamed out;
  std::int64_t next = step(ids);
  prefetcher->wait_idle();
  // Bytes read, or used in place from the page cache (--io auto, the default: the checkpoint was
  // just written, so the cache holds it): either way, the bytes a token needed.
  const auto streamed = [&] {
    const dispatch::PrefetchStats st = prefetcher->stats();
    return st.bytes_read + st.in_place_bytes;
  };
  const std::uint64_t before = streamed();
  for (std::int64_t s = 0; s < kSteps; ++s) {
    out.tokens.push_back(next);
    next = step({next});
  }
  prefetcher->wait_idle();
  out.bytes_per_token = static_cast<double>(streamed() - before) / static_cast<double>(kSteps);
  return out;
}

TEST(MixtralStreaming, DiskOffloadReadsOnlyRoutedExperts) {
  TempDir dir;
  make_model(dir.path(), {.arch = "mixtral",
                          .hidden_size = kHidden,
                          .n_layers = kLayers,
                          .n_heads = 4,
                          .n_kv_heads = 2,
                          .intermediate_size = kExpertWidth,
                          .max_position_embeddings = 64,
                          .seed = 21,
                          .n_merges = 40});
  const double expert_bytes = 3.0 * kHidden * kExpertWidth * 4;  // w1, w2, w3 in float32
  const double all_experts = 8 * expert_bytes * kLayers;
  const double routed_experts = 2 * expert_bytes * kLayers;  // one token: top 2 of 8 per layer

  const Streamed routed = decode_from_disk(dir.path(), /*whole_layers=*/false);
  const Streamed whole = decode_from_disk(dir.path(), /*whole_layers=*/true);
  EXPECT_EQ(routed.tokens, whole.tokens);  // same model, same results
  std::cout << "[ mixtral ] bytes streamed per decode token: routed experts "
            << routed.bytes_per_token << ", whole layers " << whole.bytes_per_token << " (ratio "
            << routed.bytes_per_token / whole.bytes_per_token << "; experts " << all_experts
            << " of which routed " << routed_experts << ")\n";
  RecordProperty("routed_bytes_per_token", std::to_string(routed.bytes_per_token));
  RecordProperty("whole_layer_bytes_per_token", std::to_string(whole.bytes_per_token));
  // Whole layers read every expert; routed reads read the two chosen per layer and the rest of
  // the layer (attention, router, norms: about a quarter of an expert's bytes per layer here).
  EXPECT_GE(whole.bytes_per_token, all_experts);
  EXPECT_GE(routed.bytes_per_token, routed_experts);
  EXPECT_LE(routed.bytes_per_token, routed_experts + 0.35 * expert_bytes * kLayers);
  EXPECT_LT(routed.bytes_per_token, 0.35 * whole.bytes_per_token);
}

}  // namespace
}  // namespace ferry::models
