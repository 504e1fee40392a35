#pragma once
// One resolution step, shared by `ferry plan`, `ferry run` and load_checkpoint_and_dispatch:
// from the user's budgets (or one probe of the machine) to the budgets the planner divides among
// weights, with every reserve ferry holds at run time named — staging for streamed weights, the
// KV cache, activations, and the runtime's own memory — and the plan made under them.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/execution_device.h"
#include "ferry/core/placement.h"
#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/strategy.h"

namespace ferry::plan {

// How weights that rest off the execution device reach it at run time.
enum class Streaming {
  kPrefetch,  // the prefetcher, looking ahead: two of the largest layers staged per side
  kOnDemand,  // the prefetcher without lookahead (--no-prefetch): one
  kMapped,    // Accelerate's way (--io mmap): the running layer's pages mapped, one
};

// What a run holds beside resting weights. The sizes come from the model's config and the
// requested shape (models::runtime_needs); 0 means none.
struct RuntimeOptions {
  Streaming streaming = Streaming::kPrefetch;
  bool direct_io = true;                        // O_DIRECT reads pad every tensor to pages
  std::optional<std::uint64_t> staging_bytes;   // the user's staging per side (--prefetch-bytes)
  std::uint64_t kv_cache_bytes = 0;             // the whole KV cache (context × batch)
  std::uint64_t kv_cache_layers = 0;            // the layers it is divided among
  std::uint64_t activation_bytes = 0;           // peak activations of one forward
  std::uint64_t footprint_bytes = 0;            // the runtime's own host memory
};

struct ResolveOptions {
  Strategy strategy = Strategy::kAuto;
  std::optional<MemoryBudget> max_memory;  // nullopt: the machine is probed, once
  MemoryBudget extra_reserve;              // kept free per device on top (--reserve)
  RuntimeOptions runtime;
};

// One reserve on one device, a row of `ferry plan`'s device table.
struct Reserve {
  Placement device;
  std::string what;  // "staging", "kv cache", "activations", "runtime", "reserve"
  std::uint64_t bytes = 0;
};

struct Resolution {
  MemoryBudget budget;  // the user's budgets, or the probed ones
  bool probed = false;
  ExecutionDevice main_device = ExecutionDevice::cpu();  // where inputs and outputs live
  std::vector<Reserve> reserves;                         // every reserve, each on its device
  MemoryBudget reserve;                                  // their sum per budgeted device
  // Staging the prefetcher gets (its host and device budgets); 0 when nothing streams.
  std::uint64_t host_staging_bytes = 0;
  std::uint64_t device_staging_bytes = 0;
  StrategyPlan plan;  // made under budget − reserve (and balancing)

  // The sum of reserves of one device.
  std::uint64_t reserved(Placement device) const;
};

// Resolves the budgets and plans. The KV cache and activations are reserved on the main device
// (the first budgeted GPU, else the CPU), the runtime's footprint on the CPU when the budgets are
// probed (a given budget is for ferry's data; the footprint is reported beside it). Every other
// GPU that receives weights also executes layers: it is given the activations and the KV cache
// of its share of the weights (plus one layer's), and the plan is made again until no GPU
// receives weights without that reserve. When the plan streams weights (anything on disk, or on
// the CPU while a GPU is the main device) it is made again with staging reserved: on the CPU for
// reads and CPU copies, and on the main device when it is a GPU. Reserves only grow, so the final
// plan keeps every earlier reserve. Pure apart from the one probe.
Resolution resolve_and_plan(const ModuleTree& tree, const ResolveOptions& options,
                            const PlanOptions& plan_options = {});

// The staging one run needs per side (host, device) under `runtime`, from the largest layer
// the planner will not split (Note [Staging in the budget]); the user's staging_bytes win.
struct Staging {
  std::uint64_t host_bytes = 0;
  std::uint64_t device_bytes = 0;
};
Staging staging_for(const ModuleTree& tree, const PlanOptions& plan_options,
                    const RuntimeOptions& runtime);

// Whether a map makes weights stream at run time (disk, or CPU while a GPU is the main device).
bool streams_weights(const DeviceMap& map);

}  // namespace ferry::plan
