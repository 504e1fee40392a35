// Pipeline stages: a model split over ranks (threads here, over a LocalWorld) gives the tokens the
// whole model gives, for models::generate and for any schedule of the Engine, also when a stage
// offloads to disk or holds layers on a simulated GPU.
#include "ferry/engine/pipeline.h"

#include <gtest/gtest.h>

#include <exception>
#include <map>
#include <random>
#include <thread>

#include "ferry/core/devices.h"
#include "ferry/engine/engine.h"
#include "ferry/models/generate.h"
#include "ferry/models/make_model.h"
#include "local_world.h"
#include "schedules.h"
#include "scratch_dir.h"

namespace ferry::engine {
namespace {

// A tiny model of `arch` with `layers` layers, made once per (arch, layers).
const std::filesystem::path& model_of(const std::string& arch, std::int64_t layers) {
  static std::map<std::string, std::unique_ptr<ferry::testing::ScratchDir>> made;
  const std::string key = arch + std::to_string(layers);
  auto& dir = made[key];
  if (!dir) {
    dir = std::make_unique<ferry::testing::ScratchDir>();
    models::make_model(dir->path(), {.arch = arch,
                                     .hidden_size = 32,
                                     .n_layers = layers,
                                     .n_heads = 4,
                                     .n_kv_heads = arch == "gpt2" ? 0 : 2,
                                     .intermediate_size = 64,
                                     .max_position_embeddings = 128,
                                     .seed = 11,
                                     .n_merges = 40});
  }
  return dir->path();
}

PipelineLayout layout_of(std::vector<std::int64_t> bounds) {
  PipelineLayout layout;
  for (std::size_t r = 0; r + 1 < bounds.size(); ++r) {
    layout.stages.push_back({.begin = bounds[r], .end = bounds[r + 1], .ends = r == 0});
  }
  return layout;
}

using OptionsOf = std::function<models::LoadModelOptions(int rank)>;

// Loads each rank's stage on its own thread, runs `body` with rank 0's Pipeline, and has the
// other ranks serve their stages until it finishes. Rethrows the first error of any rank.
void with_pipeline(const std::filesystem::path& dir, const PipelineLayout& layout,
                   const OptionsOf& options_of, const std::function<void(Pipeline&)>& body,
                   PipelineOptions pipeline_options = {}) {
  const int n = static_cast<int>(layout.stages.size());
  auto hub = std::make_shared<testing::LocalHub>(n);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  auto load = [&](int r) {
    models::LoadModelOptions o = options_of ? options_of(r) : models::LoadModelOptions{};
    o.stage = layout.stages[static_cast<std::size_t>(r)];
    return models::load_model(dir, o);
  };
  std::vector<std::thread> workers;
  for (int r = 1; r < n; ++r) {
    workers.emplace_back([&, r] {
      try {
        testing::LocalWorld world(hub, r);
        models::LoadedModel m;
        try {
          m = load(r);
        } catch (const std::exception& e) {
          report_stage_failure(world, e);
          throw;
        }
        serve_stage(world, *m.model, layout);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  }
  try {
    testing::LocalWorld world(hub, 0);
    models::LoadedModel m = load(0);
    Pipeline pipeline(world, m.model, layout, pipeline_options);
    body(pipeline);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : workers) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

models::StepInput prefill_of(const std::vector<std::int64_t>& prompt) {
  const auto t = static_cast<std::int64_t>(prompt.size());
  return {.input_ids = at::tensor(prompt, at::kLong).unsqueeze(0),
          .position_ids = at::arange(t, at::kLong).unsqueeze(0),
          .attention_mask = at::ones({1, t}, at::kLong)};
}

// The parts of a step run in order equal the step, for every architecture, split anywhere.
TEST(PipelineStages, PartsInOrderEqualTheStep) {
  for (const std::string arch : {"llama", "gpt2", "phi3", "gemma2", "mixtral"}) {
    SCOPED_TRACE(arch);
    models::LoadedModel m = models::load_model(model_of(arch, 3), {});
    models::CausalLM& model = *m.model;
    const models::CausalLM::StageParts parts = model.stage_parts();
    ASSERT_EQ(parts.layers.size(), 3u);
    for (const auto& path : parts.first) EXPECT_NO_THROW(model.module().submodule(path)) << path;
    for (const auto& path : parts.layers) EXPECT_NO_THROW(model.module().submodule(path)) << path;
    for (const auto& path : parts.last) EXPECT_NO_THROW(model.module().submodule(path)) << path;
    for (std::int64_t cut = 0; cut <= 3; ++cut) {
      models::KvCache whole(3), split(3);
      std::vector<std::int64_t> ids{3, 17, 40, 9, 5};
      models::StepInput in = prefill_of(ids);
      for (int step = 0; step < 3; ++step) {
        const at::Tensor expected = model.step(in, whole);
        const at::Tensor h = model.layers(model.embed(in), in, split, 0, cut);
        const at::Tensor got = model.head(model.layers(h, in, split, cut, 3));
        ASSERT_TRUE(at::equal(got, expected)) << "cut " << cut << " step " << step;
        const std::int64_t next = expected[0][-1].argmax().item<std::int64_t>();
        const std::int64_t pos = in.attention_mask.size(1);
        in = {.input_ids = at::full({1, 1}, next, at::kLong),
              .position_ids = at::full({1, 1}, pos, at::kLong),
              .attention_mask = at::ones({1, pos + 1}, at::kLong)};
      }
    }
  }
}

TEST(PipelineStages, StageLoadsOnlyItsParts) {
  const auto& dir = model_of("llama", 4);
  models::LoadedModel m =
      models::load_model(dir, {.stage = models::StageRange{.begin = 2, .end = 4}});
  ASSERT_NE(m.stage_root, nullptr);
  auto& root = m.model->module();
  EXPECT_TRUE(root.find_tensor("model.embed_tokens.weight").tensor().is_meta());
  EXPECT_TRUE(root.find_tensor("model.layers.1.mlp.up_proj.weight").tensor().is_meta());
  EXPECT_FALSE(root.find_tensor("model.layers.2.mlp.up_proj.weight").tensor().is_meta());
  EXPECT_FALSE(root.find_tensor("model.layers.3.self_attn.q_proj.weight").tensor().is_meta());
  EXPECT_TRUE(root.find_tensor("lm_head.weight").tensor().is_meta());
  // The stage's tree holds its layers under their checkpoint names, and nothing else.
  std::vector<std::string> names;
  for (const auto& t : m.stage_root->named_parameters()) names.push_back(t.name);
  for (const auto& name : names)
    EXPECT_TRUE(name.rfind("model.layers.2.", 0) == 0 || name.rfind("model.layers.3.", 0) == 0)
        << name;
  EXPECT_THROW(models::load_model(dir, {.stage = models::StageRange{.begin = 3, .end = 5}}),
               InvalidArgument);
}

TEST(Pipeline, GenerateEqualsTheWholeModel) {
  for (const std::string arch : {"llama", "gpt2"}) {
    const auto& dir = model_of(arch, 4);
    models::LoadedModel whole = models::load_model(dir, {});
    std::vector<std::vector<std::int64_t>> prompts{{3, 17, 40, 9, 5}, {8, 8, 2}, {100}};
    const auto expected = models::generate(*whole.model, prompts, {.max_new_tokens = 9});
    for (const auto& bounds : std::vector<std::vector<std::int64_t>>{
             {0, 2, 4}, {0, 1, 4}, {0, 3, 4}, {0, 1, 2, 4}, {0, 1, 2, 3, 4}}) {
      for (int micro : {1, 2, 3}) {
        SCOPED_TRACE(arch + " " + layout_of(bounds).describe() + ", micro-batches " +
                     std::to_string(micro));
        with_pipeline(dir, layout_of(bounds), {},
                      [&](Pipeline& p) {
                        const auto got = models::generate(p, prompts, {.max_new_tokens = 9});
                        EXPECT_EQ(got.tokens, expected.tokens);
                        EXPECT_GT(p.step_seconds(), 0.0);
                      },
                      {.micro_batches = micro});
      }
    }
  }
}

TEST(PipelineProperty, ContinuousBatchingEqualsAloneOverTwoAndThreeRanks) {
  const auto& dir = model_of("llama", 4);
  with_pipeline(dir, layout_of({0, 2, 4}), {},
                [](Pipeline& p) { expect_schedules_match_alone(p, 4, 21); });
  with_pipeline(dir, layout_of({0, 1, 3, 4}), {},
                [](Pipeline& p) { expect_schedules_match_alone(p, 3, 22); });
  with_pipeline(dir, layout_of({0, 1, 3, 4}), {},
                [](Pipeline& p) { expect_schedules_match_alone(p, 3, 24); }, {.micro_batches = 2});
}

TEST(PipelineProperty, StagesThatOffloadToDiskAndHoldLayersOnASimulatedGpu) {
  const auto& dir = model_of("llama", 4);
  SimGpuScope gpus({Bytes(4'000'000)});
  ferry::testing::ScratchDir offload;
  auto options_of = [&](int rank) {
    models::LoadModelOptions o;
    if (rank == 0) {
      o.dispatch.device_map = plan::DeviceMap{{"model.embed_tokens", Placement::gpu(0)},
                                              {"model.layers.0", Placement::gpu(0)},
                                              {"model.norm", Placement::cpu()},
                                              {"lm_head", Placement::cpu()}};
    } else {
      o.dispatch.device_map = plan::DeviceMap{{"model.layers.1", Placement::cpu()},
                                              {"model.layers.2", Placement::disk()},
                                              {"model.layers.3", Placement::disk()}};
      o.dispatch.offload_folder = offload.path();
    }
    return o;
  };
  models::LoadedModel whole = models::load_model(dir, {});
  const std::vector<std::vector<std::int64_t>> prompts{{3, 17, 40, 9, 5}, {8, 2}};
  const auto expected = models::generate(*whole.model, prompts, {.max_new_tokens = 8});
  with_pipeline(dir, layout_of({0, 1, 4}), options_of, [&](Pipeline& p) {
    EXPECT_EQ(models::generate(p, prompts, {.max_new_tokens = 8}).tokens, expected.tokens);
    expect_schedules_match_alone(p, 2, 23);
  });
}

TEST(Pipeline, CachesOutOfStepAreAnErrorNotAWrongAnswer) {
  const auto& dir = model_of("llama", 4);
  EXPECT_THROW(with_pipeline(dir, layout_of({0, 2, 4}), {},
                             [](Pipeline& p) {
                               models::KvCache cache(4);
                               const models::StepInput in = prefill_of({3, 4, 5});
                               p.step(in, cache);
                               // Rows dropped behind the pipeline's back (no listener call).
                               for (std::size_t l = 0; l < 2; ++l) {
                                 auto& layer = cache.layer(l);
                                 layer.assign(layer.key().narrow(2, 1, 2).contiguous(),
                                              layer.value().narrow(2, 1, 2).contiguous());
                               }
                               // A decode step expects 3 cached positions; layers 0-1 hold 2.
                               p.step({.input_ids = at::full({1, 1}, 7, at::kLong),
                                       .position_ids = at::full({1, 1}, 3, at::kLong),
                                       .attention_mask = at::ones({1, 4}, at::kLong)},
                                      cache);
                             }),
               InternalError);
}

TEST(Pipeline, ARankThatCannotLoadItsStageIsNamed) {
  const auto& dir = model_of("llama", 4);
  auto options_of = [](int rank) {
    models::LoadModelOptions o;
    // A map that leaves layer 3 without a place.
    if (rank == 2) o.dispatch.device_map = plan::DeviceMap{{"model.layers.2", Placement::cpu()}};
    return o;
  };
  try {
    with_pipeline(dir, layout_of({0, 1, 2, 4}), options_of,
                  [](Pipeline&) { ADD_FAILURE() << "rank 0 should not get a pipeline"; });
    ADD_FAILURE() << "expected an error";
  } catch (const DistributedError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 2 cannot serve its stage (layers 2-3)"),
              std::string::npos)
        << e.what();
  } catch (const Error& e) {
    // Rank 2's own error may be rethrown first; rank 0's must have been the named one.
    ADD_FAILURE() << "rank 0 did not name rank 2: " << e.what();
  }
}

TEST(Pipeline, LayoutsAreChecked) {
  EXPECT_NO_THROW(check_layout(layout_of({0, 2, 4}), 4, 2));
  EXPECT_THROW(check_layout(layout_of({0, 2, 4}), 4, 3), InvalidArgument);     // ranks
  EXPECT_THROW(check_layout(layout_of({0, 2, 3}), 4, 2), InvalidArgument);     // not covered
  EXPECT_THROW(check_layout(layout_of({0, 2, 2, 4}), 4, 3), InvalidArgument);  // empty stage
  PipelineLayout no_ends = layout_of({0, 2, 4});
  no_ends.stages[0].ends = false;
  EXPECT_THROW(check_layout(no_ends, 4, 2), InvalidArgument);
  EXPECT_EQ(layout_of({0, 2, 4}).describe(),
            "rank 0: layers 0-1 (+ embeddings, head); rank 1: layers 2-3");
}

}  // namespace
}  // namespace ferry::engine
