#include "cli/load_options.h"

#include <algorithm>
#include <variant>

#include "ferry/core/compute_dtype.h"
#include "ferry/core/log.h"

namespace ferry::cli {

models::LoadModelOptions load_options(const PlacementFlags& f, std::int64_t prompt_tokens) {
  models::LoadModelOptions load;
  auto& d = load.dispatch;
  if (const std::optional<io::ReadMode> mode = read_mode(f); !mode) {
    d.prefetch.reset();  // Accelerate's way: each block read when it runs, via mmap
  } else {
    d.prefetch->read_mode = *mode;
    d.prefetch->in_place = f.io != "copy";
    d.prefetch->lookahead = !f.no_prefetch;
    if (f.io_threads > kMaxIoThreads) {
      log_warning("--io-threads {}: using {}, the most that helps a disk", f.io_threads,
                  kMaxIoThreads);
    }
    d.prefetch->threads = std::min(f.io_threads, kMaxIoThreads);
    if (!f.prefetch_bytes.empty()) {
      const std::uint64_t bytes = Bytes::parse(f.prefetch_bytes).value();
      d.prefetch->host_budget_bytes = bytes;
      d.prefetch->device_budget_bytes = bytes;
    }
  }
  if (f.compute_on == "weights") {
    d.compute = {.where = dispatch::ComputePolicy::Where::kWeights, .max_rows = f.rest_max_rows};
  }
  std::visit([&d](auto&& map) { d.device_map = std::move(map); },
             parse_device_map_flag(f.device_map));
  d.max_memory = max_memory_of(f);
  d.reserve = reserve_budget(f.reserve, d.max_memory);
  d.offload_folder = f.offload_folder;
  if (!f.dtype.empty()) load.compute_dtype = parse_compute_dtype(f.dtype);
  if (f.quantize == "int8") load.quantize = models::Quantization::kInt8;
  // One meaning in `run` and `plan`: each name is a module class or a module path pattern.
  d.no_split_module_classes = f.no_split;
  d.no_split_patterns = f.no_split;
  load.shape = models::RunShape{
      .batch = f.batch,
      .context = f.context,
      .prompt_tokens = std::max(prompt_tokens, models::kPromptAllowance),
      .max_new_tokens = f.max_new_tokens_given ? std::optional(f.max_new_tokens) : std::nullopt};
  return load;
}

}  // namespace ferry::cli
