#pragma once
// What `ferry run` and `ferry serve` share between their flags and a loaded model: compute
// threads, loading with a progress bar, and the placement summary they print.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/placement_flags.h"
#include "ferry/models/config.h"
#include "ferry/models/registry.h"

namespace ferry::cli {

struct ComputeSetup {
  int threads = 1;   // what LibTorch computes with
  std::string blas;  // the BLAS in use (blas_in_use())
};

// Sets LibTorch's compute threads for --threads (0: every CPU this process may use; more than
// that is lowered, with a warning) and warns when LibTorch runs on the reference BLAS.
ComputeSetup set_up_compute(int requested_threads);

// load_model, with a progress bar on stderr when `progress` and stderr is a terminal.
models::LoadedModel load_model_with_progress(const std::filesystem::path& folder,
                                             models::LoadModelOptions load, bool progress);

// Adds -t/--threads and --no-progress.
void add_compute_flags(CLI::App* cmd, int& threads, bool& no_progress);

// The tokens per sequence of a command that generates for many turns or requests (serve,
// chat): --context, else the model's positions, at most `cap`. Throws InvalidArgument for a
// --context above the model's positions or below 2.
std::int64_t resolve_context(const PlacementFlags& flags, const models::ModelConfig& config,
                             std::int64_t cap);

// "    cpu   12 module(s): model.embed_tokens ... lm_head", one line per placement, then the
// devices that got nothing and why.
void print_placement(std::FILE* out, const models::LoadedModel& loaded);

}  // namespace ferry::cli
