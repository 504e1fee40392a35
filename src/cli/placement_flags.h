#pragma once
// The flags that decide where weights rest, shared by `ferry run` and `ferry plan` so that one
// set of flags means one plan: both turn them into the same models::LoadModelOptions
// (load_options.h), and both plan through plan::resolve_and_plan. LibTorch-free: the front end
// checks them and plans checkpoint headers with them (Note [Front end and engine]).

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "ferry/io/direct_reader.h"
#include "ferry/models/generation_config.h"
#include "ferry/plan/device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/resolve.h"
#include "ferry/plan/strategy.h"

namespace ferry::cli {

struct PlacementFlags {
  // A strategy (auto, balanced, balanced_low_0, sequential), a device for the whole model (cpu,
  // 0, cuda, cuda:1), or a JSON file (a map, or `ferry plan --json` output).
  std::string device_map = "auto";
  std::string max_memory;      // "0=20GiB,cpu=64GiB"; empty: probed once
  std::string reserve;         // kept free on top: "2GiB" (every device) or "0=2GiB,..."
  std::string offload_folder;  // empty: a private temporary folder when one is needed
  std::string dtype;           // compute dtype ("": float32; Note [Compute dtype])
  std::string quantize;        // weight-only quantization at load: "" (none) or "int8"
  // Never split across devices: each name is a module class (LlamaDecoderLayer) or a module path
  // pattern (model.layers.*), the same in `run` and `plan`.
  std::vector<std::string> no_split;
  bool no_prefetch = false;
  std::string prefetch_bytes;       // "" = two of the largest layers
  std::string io = "auto";          // auto (= inplace) | copy | direct | buffered | mmap
  int io_threads = 2;               // PrefetchOptions::threads
  std::string compute_on = "main";  // main | weights
  std::int64_t rest_max_rows = 16;
  // The run's shape, reserved when planning (KV cache and activations).
  std::int64_t max_new_tokens = models::kDefaultMaxNewTokens;
  bool max_new_tokens_given = false;  // -n given: else generation_config.json's, else the default
  std::int64_t context = 0;           // 0: prompt allowance + max_new_tokens
  std::int64_t batch = 1;             // `run`: the number of prompts

  // Set by the caller, never by a flag: which rank of a distributed run (issue 16) these flags
  // plan or load for, and the world's size. --max-memory reaches every rank alike; its entries
  // keyed `rankN:DEVICE` apply to rank N only (Note [Rank budgets] in plan/rank_budgets.cpp), so
  // a rank reads max_memory_text: the plain entries with its own in their place.
  //   - `ferry run`/`serve` started by a launcher (WORLD_SIZE set) set both from
  //     engine::world_from_environment() — `rank = info->rank; world_size = info->world_size;` —
  //     before check_placement_flags and load_options;
  //   - `ferry plan --world-size N` sets world_size = N, then rank = 0..N-1 for each rank's plan.
  // Both nullopt (a single process): a `rankN:` key is an InvalidArgument ("rank keys need a
  // distributed run: ferry launch or --world-size").
  std::optional<int> rank;
  std::optional<int> world_size;  // rank keys must name a rank below it; every rank is checked
};

// The values --quantize accepts, for its help and its error.
inline constexpr const char* kQuantizeValues = "int8";

// Adds the flags to `cmd` (`run` and `plan` get the same ones).
void add_placement_flags(CLI::App* cmd, PlacementFlags& flags);

// Checks every flag's value (sizes, budgets, dtype, quantize, shape, the device map's file, the
// offload folder) before anything is loaded, and warns once about sizes in bits ("600mb"). Throws
// InvalidArgument or IoError naming the flag. Budgets are checked for flags.rank, or for every
// rank when flags.world_size is known (set both first).
void check_placement_flags(const PlacementFlags& flags);

// What --device-map means: a strategy to plan with, or a map (the whole model on one device, or
// read from a JSON file, which must be a regular file of at most 64 MiB).
std::variant<plan::Strategy, plan::DeviceMap> parse_device_map_flag(const std::string& text);

// The --max-memory text of flags.rank, plain: plan::budget_text_for_rank(max_memory, *rank) in
// a distributed run, max_memory itself in a single process (where a `rankN:` key throws
// InvalidArgument naming the entry). "" when the rank has no budgets (they are probed).
std::string max_memory_text(const PlacementFlags& flags);

// What --max-memory means for flags.rank: nullopt when max_memory_text is "" (budgets are
// probed), else its entries with the defaults get_max_memory fills in. `ferry plan` and the
// engine's load_options both ask this.
std::optional<plan::MemoryBudget> max_memory_of(const PlacementFlags& flags);

// What --reserve means: nothing for "", a size on every device of `budget` (the CPU alone
// without budgets), or per-device entries "0=2GiB,cpu=4GiB".
plan::MemoryBudget reserve_budget(const std::string& text,
                                  const std::optional<plan::MemoryBudget>& budget);

// Loader threads the flags mean: --io-threads, at most kMaxIoThreads (warned once).
inline constexpr int kMaxIoThreads = 16;

// How --io reads disk-offloaded weights through the prefetcher; nullopt for mmap (no prefetcher).
// Both runtime_options and load_options ask this.
std::optional<io::ReadMode> read_mode(const PlacementFlags& flags);

// How streamed weights are read under the flags, as the planner counts it: the same figure
// dispatch::runtime_of gives for load_options(flags).dispatch (a test checks both agree).
plan::RuntimeOptions runtime_options(const PlacementFlags& flags);

// The budget text of a device key ("cpu", "disk", "0") in the resolved budgets.
std::string device_key(Placement p);

}  // namespace ferry::cli
