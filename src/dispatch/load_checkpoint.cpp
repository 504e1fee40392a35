#include "ferry/dispatch/load_checkpoint.h"

#include <fmt/format.h>

#include <unordered_map>
#include <unordered_set>

#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/core/shape.h"
#include "ferry/dispatch/dispatch_model.h"
#include "ferry/dispatch/weights_map.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/direct_reader.h"
#include "ferry/io/offload_folder.h"
#include "ferry/nn/tied.h"
#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/module_sizes.h"
#include "ferry/plan/module_tree.h"

namespace ferry::dispatch {
namespace {

bool in_fp32_module(const std::string& name, const std::vector<std::string>& modules) {
  for (const std::string& key : modules) {
    if (key == name ||
        (name.find(key) != std::string::npos && name.find(key + ".") != std::string::npos)) {
      return true;
    }
  }
  return false;
}

// The dtype a checkpoint tensor takes in the model: the requested dtype for floating tensors
// (float32 for keep_in_fp32_modules under float16), else the model's own dtype (as Accelerate's
// set_module_tensor_to_device casts a value to the existing tensor's dtype).
DType target_dtype(const std::string& name, const TensorInfo& stored, const at::Tensor& current,
                   const LoadCheckpointOptions& options) {
  if (options.dtype && is_floating(stored.dtype)) {
    if (*options.dtype == DType::kF16 && in_fp32_module(name, options.keep_in_fp32_modules)) {
      return DType::kF32;
    }
    return *options.dtype;
  }
  return from_scalar_type(current.scalar_type());
}

}  // namespace

LoadReport load_checkpoint_in_model(nn::Module& model, const std::filesystem::path& checkpoint,
                                    const LoadCheckpointOptions& options) {
  const auto& map = options.device_map;
  if (map && map->uses(Placement::disk()) && options.offload_folder.empty()) {
    throw InvalidDeviceMap(
        "At least one of the model submodule will be offloaded to disk, please pass along an "
        "`offload_folder`.");
  }
  const std::shared_ptr<const io::TensorSource> source = io::open_checkpoint(checkpoint);

  LoadReport report;
  io::OffloadIndex disk_index;
  std::unordered_set<const nn::Slot*> loaded;
  LoadProgress progress{.tensors_total = source->names().size(),
                        .bytes_total = options.progress ? source->total_bytes() : 0};
  std::filesystem::path progress_file;
  // Reported after each tensor, whichever way the loop body leaves it.
  const auto report_progress = [&](const std::string& name) {
    if (!options.progress) return;
    ++progress.tensors_done;
    progress.bytes_done += source->info(name).size_bytes();
    progress_file = source->file_of(name);
    progress.current_file = progress_file.native();
    options.progress(progress);
  };
  for (const std::string& name : source->names()) {
    if (name.find("SCB") != std::string::npos) {
      report_progress(name);
      continue;
    }
    std::optional<nn::NamedTensor> target;
    try {
      target = model.find_tensor(name);
    } catch (const MissingTensor&) {
      if (!options.ignore_unexpected || !options.ignore_unexpected(name))
        report.unexpected_keys.push_back(name);
      report_progress(name);
      continue;
    }
    const TensorInfo stored = source->info(name);
    const at::Tensor& current = target->tensor();
    if (c10::IntArrayRef(stored.shape) != current.sizes()) {
      throw make_mismatch<ShapeMismatch>("tensor", "shape",
                                         ErrorFields{.path = name,
                                                     .file = source->file_of(name).string(),
                                                     .expected = shape_string(current.sizes()),
                                                     .actual = shape_string(stored.shape)});
    }
    std::optional<Placement> placement = Placement::cpu();
    if (map) {
      placement = map->placement_of(name);
      if (!placement) {
        throw InvalidDeviceMap(fmt::format("{} doesn't have any device set.", name),
                               ErrorFields{.path = name});
      }
    }
    const DType dtype = target_dtype(name, stored, current, options);
    const bool is_buffer = target->entry->is_buffer();
    if (placement->is_disk() && (options.offload_buffers || !is_buffer)) {
      target->entry->slot->assign(
          at::empty(current.sizes(),
                    at::TensorOptions().dtype(require_scalar_type(dtype)).device(c10::kMeta)),
          name);
      const std::filesystem::path file = source->file_of(name);
      if (dtype == stored.dtype && file.extension() == ".safetensors") {
        // Read in place from the checkpoint: no second copy on disk.
        disk_index.push_back(io::OffloadEntry{.name = name,
                                              .dtype = dtype,
                                              .safetensors_file = std::filesystem::absolute(file),
                                              .weight_name = name});
      } else {
        io::offload_weight(source->load(name, {.dtype = dtype}), name, options.offload_folder,
                           disk_index);
      }
    } else {
      // Buffers of disk modules that are not offloaded are loaded too (Accelerate leaves them
      // at their constructor values; docs/deviations.md). They live on the CPU until dispatch.
      at::Tensor value = source->load(name, {.dtype = dtype});
      if (placement->is_gpu()) value = move_to(value, *placement);
      target->entry->slot->assign(std::move(value), name);
    }
    loaded.insert(target->slot().get());
    report_progress(name);
  }

  for (const auto& [name, tensor] : model.state_dict({.keep_tied = true})) {
    if (!loaded.contains(model.find_tensor(name).slot().get())) report.missing_keys.push_back(name);
  }
  if (options.strict && (!report.unexpected_keys.empty() || !report.missing_keys.empty())) {
    throw MissingTensor(
        fmt::format("Error(s) in loading state_dict for {} from {}: missing keys [{}], "
                    "unexpected keys [{}]",
                    model.class_name(), checkpoint.string(), fmt::join(report.missing_keys, ", "),
                    fmt::join(report.unexpected_keys, ", ")),
        ErrorFields{.file = checkpoint.string()});
  }
  if (!report.unexpected_keys.empty()) {
    log_warning(
        "Some weights of the model checkpoint at {} were not used when initializing {}: [{}]. "
        "This may or may not be an issue - make sure that the checkpoint does not have "
        "unnecessary parameters, or that the model definition correctly corresponds to the "
        "checkpoint.",
        checkpoint.string(), model.class_name(), fmt::join(report.unexpected_keys, ", "));
  }
  if (!report.missing_keys.empty()) {
    log_warning("Some weights of {} were not initialized from the model checkpoint at {}: [{}].",
                model.class_name(), checkpoint.string(), fmt::join(report.missing_keys, ", "));
  }
  if (!disk_index.empty()) {
    // Published last: a failure above leaves no index that a later run would trust.
    io::save_offload_index(disk_index, options.offload_folder);
    report.disk_weights = with_tied_aliases(io::OffloadFolder::open(options.offload_folder),
                                            nn::find_tied_parameters(model));
  }
  nn::retie_parameters(model, nn::find_tied_parameters(model));
  return report;
}

plan::DeviceMap load_checkpoint_and_dispatch(nn::Module& model,
                                             const std::filesystem::path& checkpoint,
                                             const LoadAndDispatchOptions& options) {
  std::optional<plan::DeviceMap> map;
  std::optional<PrefetchOptions> prefetch = options.prefetch;
  if (const auto* strategy = std::get_if<plan::Strategy>(&options.device_map)) {
    const plan::ModuleTree tree = plan::ModuleTree::from_module(model);
    const plan::PlanOptions plan_options{.no_split_module_classes = options.no_split_module_classes,
                                         .dtype = options.dtype,
                                         .offload_buffers = options.offload_buffers};
    // Note [Staging in the budget]
    // The prefetcher's staging memory (default: two of the largest layers per side) is kept free
    // on the main devices while planning — the CPU, which holds read buffers, and the first GPU,
    // which holds the device copies of streamed blocks — on top of the largest layer the planner
    // keeps free there itself (headroom for activations and the KV cache). So resident weights
    // plus staging stay within max_memory.
    plan::MemoryBudget reserve = options.reserve;
    if (prefetch) {
      const plan::MaximumSizes sizes =
          plan::calculate_maximum_sizes(tree, plan_options.no_split(), plan_options.size_options());
      std::uint64_t layer_tensors = 1;
      for (const std::string& name : sizes.largest_layer.names) {
        const auto layer = tree.find(name);
        if (!layer) continue;
        std::uint64_t n = 0;
        for (plan::NodeId id = 0; id < static_cast<plan::NodeId>(tree.size()); ++id) {
          n += tree.node(id).is_tensor() && tree.contains(*layer, id) ? 1 : 0;
        }
        layer_tensors = std::max(layer_tensors, n);
      }
      // Two layers on each side. A converted dtype holds the stored bytes beside the converted
      // ones (counted as twice the layer); host reads are padded to pages for O_DIRECT.
      const std::uint64_t layer = sizes.largest_layer.size_bits / 8 * (options.dtype ? 2 : 1);
      const std::uint64_t host = prefetch->host_budget_bytes.value_or(
          2 * (layer + layer_tensors * 3 * io::DirectReader::kAlignment));
      const std::uint64_t device = prefetch->device_budget_bytes.value_or(2 * layer);
      prefetch->host_budget_bytes = host;
      prefetch->device_budget_bytes = device;
      const plan::MemoryBudget budget =
          options.max_memory ? *options.max_memory : plan::get_max_memory();
      auto add = [&](Placement p, std::uint64_t bytes) {
        if (budget.contains(p))
          reserve.set(p, Bytes(reserve.find(p).value_or(Bytes(0)).value() + bytes));
      };
      add(Placement::cpu(), host);
      if (!budget.gpus().empty()) add(budget.gpus().front(), device);
    }
    map = plan::plan_with_strategy(
              tree,
              plan::StrategyOptions{
                  .strategy = *strategy, .max_memory = options.max_memory, .reserve = reserve},
              plan_options)
              .plan.device_map;
  } else if (const auto* given = std::get_if<plan::DeviceMap>(&options.device_map)) {
    map = *given;
  }
  const bool any_disk = map && map->uses(Placement::disk());
  LoadReport report = load_checkpoint_in_model(
      model, checkpoint,
      LoadCheckpointOptions{.device_map = map,
                            .offload_folder = options.offload_folder,
                            .dtype = options.dtype,
                            .offload_state_dict = options.offload_state_dict.value_or(any_disk),
                            .offload_buffers = options.offload_buffers,
                            .strict = options.strict,
                            .ignore_unexpected = options.ignore_unexpected,
                            .progress = options.progress});
  if (!map) return {};
  dispatch_model(model, *map,
                 DispatchOptions{.offload_dir = options.offload_folder,
                                 .offload_index = report.disk_weights,
                                 .offload_buffers = options.offload_buffers,
                                 .skip_keys = options.skip_keys,
                                 .preload_module_classes = options.preload_module_classes,
                                 .force_hooks = options.force_hooks,
                                 .prefetch = prefetch,
                                 .compute = options.compute});
  return *map;
}

}  // namespace ferry::dispatch
