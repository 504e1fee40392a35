#include "cli/distributed.h"

#include <fmt/format.h>

#include <string>

#include "cli/model_loading.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"

namespace ferry::cli {

PlacementFlags with_rank(PlacementFlags flags) {
  if (const std::optional<engine::WorldInfo> info = engine::world_from_environment()) {
    flags.rank = info->rank;
    flags.world_size = info->world_size;
  }
  return flags;
}

void add_pipeline_flags(CLI::App* cmd, int& micro_batches) {
  cmd->add_option("--micro-batches", micro_batches,
                  "Under `ferry launch`: parts a step's batch crosses the pipeline stages in "
                  "(default 1: whole)")
      ->check(CLI::Range(1, 1024));
}

std::optional<Distributed> join_pipeline(const std::filesystem::path& folder,
                                         models::LoadModelOptions& load) {
  const std::optional<engine::WorldInfo> info = engine::world_from_environment();
  if (!info || info->world_size < 2) return std::nullopt;
  Distributed d;
  d.world = engine::World::join(*info, engine::world_options_from_environment());
  d.layout = engine::agree_on_pipeline(*d.world, folder, load);
  load.stage = d.layout.stages[static_cast<std::size_t>(d.world->rank())];
  if (d.front()) log_info("pipeline over {} ranks: {}", d.world->size(), d.layout.describe());
  return d;
}

int serve_rank(Distributed& dist, const std::filesystem::path& folder,
               const models::LoadModelOptions& load) {
  models::LoadedModel stage;
  try {
    stage = models::load_model(folder, load);
  } catch (const std::exception& e) {
    engine::report_stage_failure(*dist.world, e);
    throw;
  }
  const models::StageRange& range =
      dist.layout.stages[static_cast<std::size_t>(dist.world->rank())];
  fmt::print(stderr, "rank {} of {}: layers {}-{} loaded; modules per device:\n",
             dist.world->rank(), dist.world->size(), range.begin, range.end - 1);
  print_placement(stderr, stage);
  std::fflush(stderr);
  engine::serve_stage(*dist.world, *stage.model, dist.layout);
  return 0;
}

}  // namespace ferry::cli
