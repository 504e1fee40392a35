// `ferry plan` of a model folder: the model built on meta from config.json, planned by the
// function `ferry run` calls with the same flags (engine only: Note [Front end and engine]).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include "cli/load_options.h"
#include "cli/plan_command.h"
#include "ferry/engine/world.h"
#include "ferry/models/config.h"
#include "ferry/models/registry.h"

namespace ferry::cli {
namespace {

// The config of `checkpoint` when it is a model folder whose config.json names an architecture
// ferry builds: then the plan is made on the model built on meta, exactly as `ferry run` makes
// it (with this config, read once).
std::optional<models::ModelConfig> model_folder_config(const std::filesystem::path& checkpoint) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(checkpoint / "config.json", ec)) return std::nullopt;
  models::ModelConfig config = models::load_config(checkpoint);
  const auto types = models::supported_model_types();
  if (std::find(types.begin(), types.end(), config.model_type) == types.end()) return std::nullopt;
  return config;
}

// `o.checkpoint`'s model (its config `config`) built on meta and planned under `flags` by the
// function `ferry run` calls, `stage` alone when given (a pipeline rank's part).
struct ModelPlan {
  PlanView view;
  double elapsed_ms = 0;
};
ModelPlan plan_on_meta(const PlanCommandOptions& o, const models::ModelConfig& config,
                       const PlacementFlags& flags, std::optional<models::StageRange> stage) {
  const auto start = std::chrono::steady_clock::now();
  models::LoadModelOptions load = load_options(flags, /*prompt_tokens=*/0);
  const plan::Strategy strategy = plan::parse_strategy(flags.device_map);
  load.config = config;
  load.stage = stage;
  models::PlannedModel planned = models::plan_model(o.checkpoint, load, strategy);
  nn::Module& root = planned.stage_root ? *planned.stage_root : planned.model->module();
  ModelPlan out;
  out.view = PlanView{.resolution = std::move(planned.resolution),
                      .no_split = load.dispatch.no_split_module_classes,
                      .source = "model",
                      .compute_dtype = std::string(torch_name(planned.compute_dtype)),
                      .n_tensors = root.state_dict({.keep_tied = true}).size()};
  const std::vector<std::string> blocks = planned.model->no_split_classes();
  out.view.no_split.insert(out.view.no_split.begin(), blocks.begin(), blocks.end());
  out.elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace

int plan_model_folder(const PlanCommandOptions& o) {
  std::optional<models::ModelConfig> config = model_folder_config(o.checkpoint);
  if (!config) return plan_headers(o);
  // The model on meta, planned by the function `ferry run` calls with the same flags.
  const ModelPlan planned = plan_on_meta(o, *config, o.placement, std::nullopt);
  return print_plan(o, planned.view, planned.elapsed_ms, {});
}

int plan_model_stages(const PlanCommandOptions& o) {
  std::optional<models::ModelConfig> config = model_folder_config(o.checkpoint);
  if (!config) return plan_stages(o);
  // Each rank's part on meta, as that rank of a distributed run plans it (join_pipeline sets
  // LoadModelOptions::stage to its range of the agreed layout).
  return plan_stages(o, [&o, &config](const StagePart& part) {
    ModelPlan planned = plan_on_meta(
        o, *config, part.flags,
        models::StageRange{.begin = part.begin, .end = part.end, .ends = part.rank == 0});
    return HeaderPlan{.tree = part.tree,
                      .view = std::move(planned.view),
                      .estimates = {},
                      .elapsed_ms = planned.elapsed_ms};
  });
}

std::optional<LaunchedRank> launched_rank() {
  const std::optional<engine::WorldInfo> world = engine::world_from_environment();
  if (!world) return std::nullopt;
  return LaunchedRank{.rank = world->rank, .world_size = world->world_size};
}

}  // namespace ferry::cli
