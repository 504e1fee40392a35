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

}  // namespace

std::optional<LaunchedRank> launched_rank() {
  const std::optional<engine::WorldInfo> world = engine::world_from_environment();
  if (!world) return std::nullopt;
  return LaunchedRank{.rank = world->rank, .world_size = world->world_size};
}

int plan_model_folder(const PlanCommandOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const std::filesystem::path checkpoint(o.checkpoint);
  std::optional<models::ModelConfig> config = model_folder_config(checkpoint);
  if (!config) return plan_headers(o);
  models::LoadModelOptions load = load_options(o.placement, /*prompt_tokens=*/0);
  const plan::Strategy strategy = plan::parse_strategy(o.placement.device_map);
  load.config = std::move(config);
  // The model on meta, planned by the function `ferry run` calls with the same flags.
  models::PlannedModel planned = models::plan_model(checkpoint, load, strategy);
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  PlanView v{.resolution = std::move(planned.resolution),
             .no_split = load.dispatch.no_split_module_classes,
             .source = "model",
             .compute_dtype = std::string(torch_name(planned.compute_dtype)),
             .n_tensors = planned.model->module().state_dict({.keep_tied = true}).size()};
  const std::vector<std::string> blocks = planned.model->no_split_classes();
  v.no_split.insert(v.no_split.begin(), blocks.begin(), blocks.end());
  return print_plan(o, v, elapsed_ms, {});
}

}  // namespace ferry::cli
