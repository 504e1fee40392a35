#pragma once
// What `ferry run` and `ferry serve` do when a launcher (`ferry launch`, torchrun) started them as
// one rank of several (issue 16): join the world, agree on the checkpoint and the pipeline
// layout, and load only this rank's stage.

#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>

#include "cli/placement_flags.h"
#include "ferry/engine/pipeline.h"
#include "ferry/engine/world.h"
#include "ferry/models/registry.h"

namespace ferry::cli {

struct Distributed {
  std::unique_ptr<engine::World> world;
  engine::PipelineLayout layout;
  bool front() const { return world->rank() == 0; }
};

// `flags` with the rank and world size of a distributed run (from the launcher's variables), so
// that its --max-memory entries keyed rankN: apply to this rank only; unchanged otherwise.
PlacementFlags with_rank(PlacementFlags flags);

// Adds --micro-batches (pipeline runs only: engine::PipelineOptions::micro_batches).
void add_pipeline_flags(CLI::App* cmd, int& micro_batches);

// nullopt unless the launcher's variables say this is one rank of a world of two or more. Else
// joins the world, agrees on the checkpoint and the layout (engine::agree_on_pipeline) and sets
// `load.stage` to this rank's part.
std::optional<Distributed> join_pipeline(const std::filesystem::path& folder,
                                         models::LoadModelOptions& load);

// A rank > 0 of `run` or `serve`: loads its stage and serves it until rank 0 finishes; a failure
// to load is reported to rank 0 (engine::report_stage_failure) and rethrown. Returns 0.
int serve_rank(Distributed& dist, const std::filesystem::path& folder,
               const models::LoadModelOptions& load);

}  // namespace ferry::cli
