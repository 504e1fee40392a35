#pragma once
// Loading a checkpoint into a model built on meta, per a device map, and the one-call
// load_checkpoint_and_dispatch (spec §1 items 7–8, §2.18).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ferry/core/dtype.h"
#include "ferry/dispatch/align_devices.h"
#include "ferry/dispatch/dispatch_model.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/plan/device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/resolve.h"
#include "ferry/plan/strategy.h"

namespace ferry::dispatch {

// Where a load stands, reported after each checkpoint tensor (skipped and unexpected ones
// included, so the counts reach their totals). Bytes are stored bytes, as in the file.
struct LoadProgress {
  std::size_t tensors_done = 0;
  std::size_t tensors_total = 0;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;  // the checkpoint's TensorSource::total_bytes()
  std::string_view current_file;  // the file the last tensor came from; valid during the call
};
// Called on the loading thread; an exception it throws aborts the load and propagates.
using LoadProgressCallback = std::function<void(const LoadProgress&)>;

struct LoadCheckpointOptions {
  std::optional<plan::DeviceMap> device_map;  // nullopt: every tensor to the CPU
  std::filesystem::path offload_folder;       // required when the map has "disk"
  std::optional<DType> dtype;                 // floating tensors converted to it; ints untouched
  // Accelerate bounds RAM by staging CPU weights through a temporary folder. ferry's CPU tensors
  // are views of the mapped checkpoint (page cache, not process memory), which bounds RAM
  // already; the option is accepted and changes nothing.
  bool offload_state_dict = false;
  bool offload_buffers = false;  // disk modules' persistent buffers go to disk too
  bool strict = false;           // missing or unexpected keys are errors instead of warnings
  // True for a checkpoint tensor the model lacks that is dropped silently, neither reported nor
  // warned about (transformers' _keys_to_ignore_on_load_unexpected); empty: none.
  std::function<bool(const std::string& name)> ignore_unexpected;
  std::vector<std::string> keep_in_fp32_modules;  // with dtype float16: these stay float32
  LoadProgressCallback progress;                  // empty: no reports
};

struct LoadReport {
  std::vector<std::string> missing_keys;     // model tensors the checkpoint did not provide
  std::vector<std::string> unexpected_keys;  // checkpoint tensors the model does not have
  WeightsMap disk_weights;                   // where disk-placed tensors are read from (or null)
};

// Loads `checkpoint` (a .safetensors file, a *.index.json, or a folder with either) into
// `model`. CPU tensors are zero-copy views of the mapped file where no conversion is needed;
// GPU tensors are copied there; "disk" tensors rest on meta and are referenced in place in the
// checkpoint (or, when a dtype conversion is needed, written to offload_folder), the index
// published last. Throws InvalidDeviceMap, ShapeMismatch (naming tensor, file, shapes),
// MissingTensor (strict), CorruptFile / IoError from the reader.
LoadReport load_checkpoint_in_model(nn::Module& model, const std::filesystem::path& checkpoint,
                                    const LoadCheckpointOptions& options = {});
// The same from a source already opened (a view over a checkpoint, such as models' int8 one);
// messages name source->description().
LoadReport load_checkpoint_in_model(nn::Module& model,
                                    const std::shared_ptr<const io::TensorSource>& source,
                                    const LoadCheckpointOptions& options = {});

// Throws InvalidArgument when `offload_folder` is `checkpoint_folder` (after resolving links and
// dots): converted weights are never written where weights are read from. `example_file` (a
// checkpoint file in that folder) is named in the message when given. No-op for an empty folder.
void check_offload_folder(const std::filesystem::path& offload_folder,
                          const std::filesystem::path& checkpoint_folder,
                          const std::filesystem::path& example_file = {});

struct LoadAndDispatchOptions {
  // Nothing: load on the CPU without dispatch; a strategy: plan with it; a map: use it.
  std::variant<std::monostate, plan::Strategy, plan::DeviceMap> device_map;
  std::optional<plan::MemoryBudget> max_memory;  // nullopt: probed budgets
  plan::MemoryBudget reserve;                    // kept free per device when planning
  std::vector<std::string> no_split_module_classes;
  std::vector<std::string> no_split_patterns;  // module path globs never split (ferry's)
  std::filesystem::path offload_folder;
  bool offload_buffers = false;
  std::optional<DType> dtype;
  std::optional<bool> offload_state_dict;  // default: true iff the map has "disk"
  std::vector<std::string> skip_keys;
  std::vector<std::string> preload_module_classes;
  bool force_hooks = false;
  bool strict = false;
  std::function<bool(const std::string& name)> ignore_unexpected;  // see LoadCheckpointOptions
  LoadProgressCallback progress;  // passed to load_checkpoint_in_model
  std::optional<PrefetchOptions> prefetch = PrefetchOptions{};  // see DispatchOptions
  ComputePolicy compute;                                        // see DispatchOptions
  // Where offloaded blocks execute; nullopt: the resolution's main device for a strategy (the
  // device its staging, KV cache and activations were reserved on), else the map's first GPU.
  std::optional<ExecutionDevice> main_device;
  // What a run holds beside the weights (KV cache, activations, the runtime's own memory),
  // reserved when planning. Its streaming fields are ignored: they follow `prefetch`.
  plan::RuntimeOptions runtime;
};

// The runtime options of `options`: its KV cache, activations and footprint, with streaming,
// O_DIRECT and staging taken from its prefetch options (none: Accelerate's mapped reads).
plan::RuntimeOptions runtime_of(const LoadAndDispatchOptions& options);

// The one resolution step (plan::resolve_and_plan) of load_checkpoint_and_dispatch for a model
// and a strategy: `ferry plan` and `ferry run` call it and get the same budgets and map.
plan::Resolution resolve_for_dispatch(nn::Module& model, plan::Strategy strategy,
                                      const LoadAndDispatchOptions& options);

// Makes `options` load what `resolution` planned: its device map, its main device (where its
// reserves were made) and, with a prefetcher, its staging budgets.
void apply_resolution(LoadAndDispatchOptions& options, const plan::Resolution& resolution);

// Plans (for a strategy), loads, and dispatches. Returns the device map used (empty when none).
plan::DeviceMap load_checkpoint_and_dispatch(nn::Module& model,
                                             const std::filesystem::path& checkpoint,
                                             const LoadAndDispatchOptions& options = {});
// The same from a source already opened.
plan::DeviceMap load_checkpoint_and_dispatch(nn::Module& model,
                                             const std::shared_ptr<const io::TensorSource>& source,
                                             const LoadAndDispatchOptions& options = {});

}  // namespace ferry::dispatch
