#pragma once
// `ferry plan`'s parts shared by the front end and the engine (Note [Front end and engine]):
// the options, the plan from checkpoint headers (LibTorch-free, plan.cpp) and its printing; the
// plan of a model folder built on meta is the engine's (plan_model.cpp).

#include <string>
#include <vector>

#include "cli/placement_flags.h"
#include "ferry/plan/estimate.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/resolve.h"

namespace ferry::cli {

struct PlanCommandOptions {
  std::string checkpoint;
  bool json = false;
  bool headers_only = false;  // plan from the tensor headers even when config.json is there
  PlacementFlags placement;   // the same flags as `ferry run`, meaning the same
};

struct PlanView {
  const plan::ModuleTree* tree = nullptr;  // for ordering the map's rows (header plans)
  plan::Resolution resolution;
  std::vector<std::string> no_split;
  std::string source;  // "model" or "headers"
  std::string compute_dtype;  // "float32", ...; "auto" for a headers plan asked for auto
  std::size_t n_tensors = 0;
};

// Prints the plan as a table, or as one JSON object under --json (docs/cli.md).
int print_plan(const PlanCommandOptions& o, const PlanView& v, double elapsed_ms,
               const std::vector<plan::SizeEstimate>& estimates);

// Plans the checkpoint's tensor headers (no config.json needed, nothing loaded).
int plan_headers(const PlanCommandOptions& o);

// Plans a model folder (config.json) on the model built on meta, as `ferry run` plans it; a
// config.json of an architecture ferry does not build is planned from its headers. Engine only:
// the front end hands the command to the engine.
int plan_model_folder(const PlanCommandOptions& o);

}  // namespace ferry::cli
