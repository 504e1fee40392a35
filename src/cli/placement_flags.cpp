#include "cli/placement_flags.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "cli/paths.h"
#include "cli/sizes.h"
#include "ferry/core/bytes.h"
#include "ferry/core/compute_dtype.h"
#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/core/memory.h"
#include "ferry/plan/device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/rank_budgets.h"
#include "ferry/plan/strategy.h"
#include "io/json_file.h"

namespace ferry::cli {
namespace {

constexpr std::uint64_t kMaxMapFileBytes = std::uint64_t{64} << 20;

// A map file: a device map object, or `ferry plan --json` output (its "device_map"). Read
// through io's guarded reader: a FIFO or device named on the command line fails at once instead
// of blocking, and a huge file is refused by its size.
plan::DeviceMap read_map_file(const std::string& path) {
  require_path("--device-map", path, PathKind::kFile);
  const std::string text = io::read_text_file(path, kMaxMapFileBytes);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("device_map") && j["device_map"].is_object()) {
    return plan::DeviceMap::from_json(j["device_map"].dump());
  }
  return plan::DeviceMap::from_json(text);
}

// A whole-model device as transformers' device_map accepts it: "cpu", "cuda", "cuda:1", "0".
std::optional<Placement> whole_model_device(std::string_view text) {
  if (text == "cuda") return Placement::gpu(0);
  if (text == "disk") return std::nullopt;  // nothing to compute on
  try {
    return Placement::parse(text);
  } catch (const InvalidArgument&) {
    return std::nullopt;
  }
}

bool is_strategy(std::string_view text) {
  return text == "auto" || text == "balanced" || text == "balanced_low_0" || text == "sequential";
}

}  // namespace

std::string device_key(Placement p) { return p.to_string(); }

std::string max_memory_text(const PlacementFlags& flags) {
  if (flags.rank) return plan::budget_text_for_rank(flags.max_memory, *flags.rank);
  FERRY_ASSERT(!flags.world_size, "max_memory_text: a world of {} rank(s) but no rank",
               *flags.world_size);
  for (const plan::BudgetEntry& e : plan::parse_budget_entries(flags.max_memory)) {
    if (plan::is_rank_key(e.device)) {
      throw InvalidArgument(
          fmt::format("--max-memory entry '{}={}': rank keys need a distributed run: ferry "
                      "launch or --world-size",
                      e.device, e.size),
          ErrorFields{.path = e.device,
                      .expected = "a distributed run (ferry launch, or plan --world-size N)",
                      .actual = "a single process"});
    }
  }
  return flags.max_memory;
}

std::optional<plan::MemoryBudget> max_memory_of(const PlacementFlags& flags) {
  if (flags.max_memory.empty()) return std::nullopt;
  const std::string text = max_memory_text(flags);
  if (text.empty()) return std::nullopt;
  return plan::get_max_memory(plan::parse_budget_entries(text));
}

plan::MemoryBudget reserve_budget(const std::string& text,
                                  const std::optional<plan::MemoryBudget>& budget) {
  if (text.empty()) return {};
  if (text.find('=') != std::string::npos) {
    return plan::get_max_memory(plan::parse_budget_entries(text), /*gpu_count=*/1 << 30);
  }
  plan::MemoryBudget reserve;
  const Bytes each = Bytes::parse(text);
  if (budget) {
    for (const auto& [p, b] : budget->entries()) reserve.set(p, each);
  } else {
    reserve.set(Placement::cpu(), each);
  }
  return reserve;
}

void add_placement_flags(CLI::App* cmd, PlacementFlags& f) {
  cmd->add_option("--device-map", f.device_map,
                  "auto|balanced|balanced_low_0|sequential, a device for the whole model (cpu, "
                  "0, cuda:1), or FILE.json (a map, or the output of `ferry plan --json`)");
  cmd->add_option("--max-memory", f.max_memory,
                  "Budgets per device, e.g. 0=20GiB,cpu=64GiB (default: probed); in a "
                  "distributed run for every rank, and rankN:DEVICE=SIZE for rank N alone "
                  "(cpu=4GiB,rank1:cpu=8GiB)");
  cmd->add_option("--reserve", f.reserve,
                  "Memory kept free on top of ferry's own reserves: a size for every device, or "
                  "0=2GiB,cpu=4GiB");
  cmd->add_option("--offload-folder", f.offload_folder,
                  "Folder for converted disk-offloaded weights, locked while in use and reused by "
                  "later runs of the same model and dtype (default: a private temporary folder, "
                  "removed at exit)");
  cmd->add_option("--dtype", f.dtype,
                  "Compute dtype, as transformers' torch_dtype: float32 (default, whatever the "
                  "checkpoint stores), bfloat16, float16, or auto (the checkpoint's). Weights "
                  "stay in their stored dtype unless this is narrower");
  cmd->add_option("--quantize", f.quantize,
                  "Quantize the decoder blocks' Linear weights at load, weight-only: int8 (one "
                  "float16 scale per 32 inputs; about 1/4 of float32's bytes in RAM, on disk and "
                  "streamed). Embeddings, norms and lm_head keep their dtype");
  cmd->add_option("--no-split", f.no_split,
                  "Never split across devices: a module class (LlamaDecoderLayer) or a module path "
                  "pattern (model.layers.*), the same in run and plan; repeatable")
      ->allow_extra_args(false);
  cmd->add_flag("--no-prefetch", f.no_prefetch,
                "Load each offloaded block when it runs instead of ahead of need");
  cmd->add_option("--prefetch-bytes", f.prefetch_bytes,
                  "Staging memory for streamed blocks per side, counted in the budgets (default: "
                  "two of the largest layers)");
  cmd->add_option("--io", f.io,
                  "How disk-offloaded weights are read: auto (a tensor the page cache holds is "
                  "computed from its pages in place, the rest is read with O_DIRECT), copy (as "
                  "auto, but cached bytes are copied), inplace (the same as auto), direct "
                  "(O_DIRECT where the file system allows), buffered (page cache), mmap "
                  "(Accelerate's way, no prefetch)")
      ->check(CLI::IsMember({"auto", "copy", "inplace", "direct", "buffered", "mmap"}));
  cmd->add_option("--io-threads", f.io_threads, "Loader threads of the prefetcher (default 2)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--compute-on", f.compute_on,
                  "Where CPU-resident blocks run when a GPU is the main device: main (stream "
                  "their weights to it) or weights (run them on the CPU for small batches)")
      ->check(CLI::IsMember({"main", "weights"}));
  cmd->add_option("--rest-max-rows", f.rest_max_rows,
                  "With --compute-on weights: largest batch x tokens computed on the CPU");
  cmd->add_option("-n,--max-new-tokens", f.max_new_tokens,
                  "Tokens to generate (per prompt; default: generation_config.json's, else 32)")
      ->each([&f](const std::string&) { f.max_new_tokens_given = true; });
  cmd->add_option("-c,--context", f.context,
                  "Tokens of KV cache reserved per sequence (default: the prompt allowance, 256 "
                  "or the longest prompt, plus --max-new-tokens)");
}

std::variant<plan::Strategy, plan::DeviceMap> parse_device_map_flag(const std::string& text) {
  if (is_strategy(text)) return plan::parse_strategy(text);
  if (const std::optional<Placement> device = whole_model_device(text)) {
    return plan::DeviceMap{{"", *device}};
  }
  std::error_code ec;
  if (!std::filesystem::exists(text, ec)) {
    throw InvalidArgument(
        fmt::format("--device-map {}: expected a strategy (auto, balanced, balanced_low_0, "
                    "sequential), a device for the whole model (cpu, 0, cuda, cuda:1) or a JSON "
                    "file; {} does not exist",
                    text, text),
        ErrorFields{
            .file = text, .expected = "a strategy, a device or a JSON file", .actual = "nothing"});
  }
  return read_map_file(text);
}

void check_placement_flags(const PlacementFlags& f) {
  FERRY_CHECK(f.max_new_tokens >= 0, InvalidArgument,
              "--max-new-tokens: expected 0 or more, got {}", f.max_new_tokens);
  FERRY_CHECK(f.context >= 0, InvalidArgument, "--context: expected 0 (automatic) or more, got {}",
              f.context);
  FERRY_CHECK(f.batch >= 1, InvalidArgument, "--batch: expected 1 or more, got {}", f.batch);
  FERRY_CHECK(f.rest_max_rows >= 0, InvalidArgument, "--rest-max-rows: expected 0 or more, got {}",
              f.rest_max_rows);
  FERRY_CHECK(!f.world_size || *f.world_size >= 1, InvalidArgument,
              "world size: expected 1 or more ranks, got {}", f.world_size.value_or(0));
  if (f.rank) {
    FERRY_CHECK(*f.rank >= 0 && (!f.world_size || *f.rank < *f.world_size), InvalidArgument,
                "rank {}: expected 0 or more{}", *f.rank,
                f.world_size ? fmt::format(", below the world size {}", *f.world_size) : "");
  }
  if (!f.max_memory.empty()) {
    check_budget_sizes("--max-memory", f.max_memory);
    plan::check_rank_budgets(f.max_memory, f.world_size);
    if (f.world_size && *f.world_size > 1) {
      // Each rank's budgets, read as that rank reads them (GPU indices are warned about when
      // the rank plans, not once per rank here).
      for (int r = 0; r < *f.world_size; ++r) {
        (void)plan::get_max_memory(
            plan::parse_budget_entries(plan::budget_text_for_rank(f.max_memory, r)),
            /*gpu_count=*/1 << 30);
      }
    } else {
      PlacementFlags one = f;
      if (one.world_size) one.rank = one.rank.value_or(0);
      (void)plan::get_max_memory(plan::parse_budget_entries(max_memory_text(one)));
    }
  }
  if (!f.prefetch_bytes.empty()) {
    (void)parse_size_flag("--prefetch-bytes", f.prefetch_bytes, /*warn=*/true);
  }
  if (!f.reserve.empty()) {
    if (f.reserve.find('=') != std::string::npos) {
      check_budget_sizes("--reserve", f.reserve);
    } else {
      (void)parse_size_flag("--reserve", f.reserve, /*warn=*/true);
    }
    (void)reserve_budget(f.reserve, std::nullopt);
  }
  if (!f.dtype.empty()) {
    const ComputeDType compute = parse_compute_dtype(f.dtype);
    // float16 on a machine without CUDA fails here, not after "loading" (auto: when resolved).
    if (!compute.automatic && probe_gpus().empty()) check_computable(compute.dtype, false);
  }
  FERRY_CHECK(f.quantize.empty() || f.quantize == "int8", InvalidArgument,
              "--quantize: '{}' is not supported (accepted: {})", f.quantize, kQuantizeValues);
  if (!f.offload_folder.empty()) require_output_folder("--offload-folder", f.offload_folder);
  // Strategies and devices are checked here; a file is checked (and read, once) by load_options.
  if (!is_strategy(f.device_map) && !whole_model_device(f.device_map)) {
    std::error_code ec;
    if (!std::filesystem::exists(f.device_map, ec)) (void)parse_device_map_flag(f.device_map);
    require_path("--device-map", f.device_map, PathKind::kFile);
  }
}

std::optional<io::ReadMode> read_mode(const PlacementFlags& f) {
  if (f.io == "mmap") return std::nullopt;
  if (f.io == "direct") return io::ReadMode::Direct;
  if (f.io == "buffered") return io::ReadMode::Buffered;
  FERRY_CHECK(f.io == "auto" || f.io == "copy" || f.io == "inplace", InvalidArgument,
              "--io {}: expected one of auto, copy, inplace, direct, buffered, mmap", f.io);
  return io::ReadMode::Auto;
}

plan::RuntimeOptions runtime_options(const PlacementFlags& f) {
  plan::RuntimeOptions rt;
  const std::optional<io::ReadMode> mode = read_mode(f);
  if (!mode) {
    // Accelerate's way: each block read when it runs, via mmap, with no staging.
    rt.streaming = plan::Streaming::kMapped;
    rt.direct_io = false;
    return rt;
  }
  rt.streaming = f.no_prefetch ? plan::Streaming::kOnDemand : plan::Streaming::kPrefetch;
  rt.direct_io = io::reads_whole_pages(*mode);
  if (!f.prefetch_bytes.empty()) rt.staging_bytes = Bytes::parse(f.prefetch_bytes).value();
  return rt;
}

}  // namespace ferry::cli
