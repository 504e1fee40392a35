#pragma once
// `ferry plan`'s parts shared by the front end and the engine (Note [Front end and engine]):
// the options, the plan from checkpoint headers (LibTorch-free, plan.cpp) and its printing; the
// plan of a model folder built on meta is the engine's (plan_model.cpp).

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/placement_flags.h"
#include "ferry/core/dtype.h"
#include "ferry/core/tensor_info.h"
#include "ferry/plan/estimate.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/resolve.h"

namespace ferry::cli {

struct PlanCommandOptions {
  std::string checkpoint;
  bool json = false;
  bool headers_only = false;  // plan from the tensor headers even when config.json is there
  PlacementFlags placement;   // the same flags as `ferry run`, meaning the same
  // --world-size N: the split over N pipeline ranks and each rank's plan (plan_stages); 1 is a
  // single process's plan with rank 0's budgets. nullopt: not given.
  std::optional<int> world_size;
};

struct PlanView {
  const plan::ModuleTree* tree = nullptr;  // for ordering the map's rows (header plans)
  plan::Resolution resolution;
  std::vector<std::string> no_split;
  std::string source;         // "model" or "headers"
  std::string compute_dtype;  // "float32", ...; "auto" for a headers plan asked for auto
  std::size_t n_tensors = 0;
  std::string part;  // "rank 1 (layers 12-23)" for one rank's plan; "" for the whole model
};

// Prints the plan as a table (print_plan_text), or as one JSON object (plan_json) under --json
// (docs/cli.md).
int print_plan(const PlanCommandOptions& o, const PlanView& v, double elapsed_ms,
               const std::vector<plan::SizeEstimate>& estimates);
// The plan's JSON object, `ferry plan --json`'s output (and each rank's under --world-size).
nlohmann::ordered_json plan_json(const PlanCommandOptions& o, const PlanView& v, double elapsed_ms,
                                 const std::vector<plan::SizeEstimate>& estimates);
// The plan as text: the device map's rows, each device's budget, reserves and headroom.
void print_plan_text(const PlanCommandOptions& o, const PlanView& v, double elapsed_ms,
                     const std::vector<plan::SizeEstimate>& estimates);

// The tensor headers of a safetensors file, sharded index or model folder.
std::vector<TensorInfo> read_tensor_infos(const std::string& checkpoint);

// Refuses the flags a plan from headers cannot honour (--quantize), naming why headers are used.
void check_header_flags(const PlanCommandOptions& o);

// What every part of one checkpoint is planned with from its headers.
struct HeaderPlanBasis {
  // Never split: the repeated numbered blocks of the whole checkpoint (so a rank holding one
  // layer still keeps it whole), then --no-split's names as module path patterns.
  std::vector<std::string> no_split;
  std::optional<DType> narrowed;  // what floating weights are narrowed to at load, if anything
  std::string compute_dtype;      // "float32", ...
};
HeaderPlanBasis header_plan_basis(const plan::ModuleTree& whole,
                                  const std::vector<TensorInfo>& infos, const PlacementFlags& f);

// A plan of `tree` (a checkpoint's headers, or one rank's part of them) under the flags (the
// budgets of f.rank: max_memory_of) with `runtime`'s reserves.
struct HeaderPlan {
  std::shared_ptr<const plan::ModuleTree> tree;
  PlanView view;  // view.tree is tree
  std::vector<plan::SizeEstimate> estimates;
  double elapsed_ms = 0;
};
HeaderPlan plan_header_tree(std::shared_ptr<const plan::ModuleTree> tree, std::size_t n_tensors,
                            const HeaderPlanBasis& basis, const PlacementFlags& f,
                            const plan::RuntimeOptions& runtime);

// Plans the checkpoint's tensor headers (no config.json needed, nothing loaded).
int plan_headers(const PlanCommandOptions& o);

// One rank's part of a pipeline, to be planned (plan_stages).
struct StagePart {
  int rank = 0;
  std::int64_t begin = 0;  // its decoder layers [begin, end); rank 0 holds the ends too
  std::int64_t end = 0;
  PlacementFlags flags;  // the command's flags with .rank set: its budgets are max_memory_of's
  std::vector<TensorInfo> tensors;            // the checkpoint tensors it holds
  std::shared_ptr<const plan::ModuleTree> tree;  // their module tree
};
// A rank's plan: its view and estimates (HeaderPlan's; .tree is the part's).
using StagePlanner = std::function<HeaderPlan(const StagePart&)>;

// `ferry plan --world-size N` (N > 1): splits the checkpoint's decoder layers over N ranks from
// its headers as a distributed run does (plan::stage_sizes, each rank's budgets, plan::
// split_stages), then plans each rank's part with `planner`: by default as plan_headers plans a
// whole checkpoint, from its headers (plan_stages.cpp).
int plan_stages(const PlanCommandOptions& o, const StagePlanner& planner = {});

// `ferry plan --world-size N` of a model folder: the split of plan_stages, each rank's part
// planned on the model built on meta as that rank of `ferry launch -- run` plans it (its KV
// cache and activation reserves included; --quantize honoured). A config.json of an
// architecture ferry does not build is planned from its headers. Engine only.
int plan_model_stages(const PlanCommandOptions& o);

// Plans a model folder (config.json) on the model built on meta, as `ferry run` plans it; a
// config.json of an architecture ferry does not build is planned from its headers. Engine only:
// the front end hands the command to the engine.
int plan_model_folder(const PlanCommandOptions& o);

// The rank this process is under a launcher (`ferry launch`, torchrun): WORLD_SIZE and RANK,
// read strictly (engine::world_from_environment); nullopt when WORLD_SIZE is unset. Engine only:
// the front end hands `plan` to the engine when WORLD_SIZE is set.
struct LaunchedRank {
  int rank = 0;
  int world_size = 1;
};
std::optional<LaunchedRank> launched_rank();

}  // namespace ferry::cli
