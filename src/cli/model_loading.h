#pragma once
// What `ferry run` and `ferry serve` share between their flags and a loaded model: compute
// threads, loading with a progress bar, and the placement summary they print.

#include <cstdio>
#include <filesystem>
#include <string>

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

// "    cpu   12 module(s): model.embed_tokens ... lm_head", one line per placement, then the
// devices that got nothing and why.
void print_placement(std::FILE* out, const models::LoadedModel& loaded);

}  // namespace ferry::cli
