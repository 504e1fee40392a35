#include "ferry/dispatch/load_checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
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
#include "ferry/io/offload_workspace.h"
#include "ferry/io/safetensors.h"
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

// The files a checkpoint's tensors lie in (tensors of a view computed in memory lie in none).
std::set<std::filesystem::path> files_of(const io::TensorSource& source) {
  std::set<std::filesystem::path> files;
  for (const std::string& name : source.names()) {
    if (std::filesystem::path file = source.file_of(name); !file.empty()) files.insert(file);
  }
  return files;
}

// Fingerprint of a checkpoint as a source of converted copies: every tensor's name, dtype and
// shape, and each file's path, size and modification time (a rewritten checkpoint changes it).
std::string source_fingerprint(const io::TensorSource& source,
                               const std::set<std::filesystem::path>& files,
                               std::optional<DType> dtype) {
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a, 64 bits
  const auto mix = [&h](std::string_view text) {
    for (const char c : text) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ULL;
    }
    h ^= 0xffU;  // field separator
    h *= 1099511628211ULL;
  };
  mix(dtype ? safetensors_name(*dtype) : std::string_view("stored"));
  for (const std::string& name : source.names()) {
    const TensorInfo info = source.info(name);
    mix(name);
    mix(safetensors_name(info.dtype));
    mix(shape_string(info.shape));
  }
  for (const std::filesystem::path& file : files) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(file, ec);
    const auto time = std::filesystem::last_write_time(file, ec);
    mix(std::filesystem::absolute(file).string());
    mix(std::to_string(ec ? 0 : size));
    mix(std::to_string(ec ? 0 : time.time_since_epoch().count()));
  }
  return fmt::format("fnv1a64:{:016x}", h);
}

// Never write into a folder weights are read from (an offload-format checkpoint converted into
// its own folder would be rewritten under its index).
void check_not_a_source_folder(const std::set<std::filesystem::path>& files,
                               const std::filesystem::path& folder) {
  for (const std::filesystem::path& file : files) {
    if (!file.empty()) check_offload_folder(folder, file.parent_path(), file);
  }
}

}  // namespace

void check_offload_folder(const std::filesystem::path& offload_folder,
                          const std::filesystem::path& checkpoint_folder,
                          const std::filesystem::path& example_file) {
  std::error_code ec;
  const std::filesystem::path target = std::filesystem::weakly_canonical(offload_folder, ec);
  if (ec || offload_folder.empty()) return;
  const auto dir = std::filesystem::weakly_canonical(checkpoint_folder, ec);
  if (ec || dir != target) return;
  const std::filesystem::path& shown = example_file.empty() ? checkpoint_folder : example_file;
  throw InvalidArgument(
      fmt::format("offload folder {} is the folder the checkpoint is read from ({}): expected a "
                  "separate folder for converted weights, got the same one",
                  offload_folder.string(), shown.string()),
      ErrorFields{.file = shown.string(),
                  .expected = "a folder other than the checkpoint's",
                  .actual = offload_folder.string()});
}

namespace {
LoadReport load_from(nn::Module& model, const std::shared_ptr<const io::TensorSource>& source,
                     const std::string& checkpoint, const LoadCheckpointOptions& options);
}  // namespace

LoadReport load_checkpoint_in_model(nn::Module& model, const std::filesystem::path& checkpoint,
                                    const LoadCheckpointOptions& options) {
  return load_from(model, io::open_checkpoint(checkpoint), checkpoint.string(), options);
}

LoadReport load_checkpoint_in_model(nn::Module& model,
                                    const std::shared_ptr<const io::TensorSource>& source,
                                    const LoadCheckpointOptions& options) {
  return load_from(model, source, source->description(), options);
}

namespace {

// load_checkpoint_in_model of `source`, named `checkpoint` in messages.
LoadReport load_from(nn::Module& model, const std::shared_ptr<const io::TensorSource>& source,
                     const std::string& checkpoint, const LoadCheckpointOptions& options) {
  const auto& map = options.device_map;
  const std::set<std::filesystem::path> files = files_of(*source);
  // Accelerate's load_state_dict: each safetensors file must say it holds PyTorch tensors.
  for (const std::filesystem::path& file : files) {
    if (file.extension() == ".safetensors") io::check_pt_format(*io::SafetensorsFile::open(file));
  }

  // A checkpoint stores a tied weight once (and a module registered under two names under one
  // of them). When a name of such a group rests on disk but is not stored, the stored name is
  // offloaded as well, whatever its own placement: the disk weights then hold it, and the disk
  // name reads it through with_tied_aliases (Note [Tied weights split between resident and
  // offloaded modules] in dispatch_model.cpp).
  const std::vector<std::vector<std::string>> tied_groups = nn::find_tied_parameters(model);
  std::unordered_set<std::string> also_on_disk;
  if (map) {
    for (const auto& group : tied_groups) {
      const auto stored = std::find_if(group.begin(), group.end(),
                                       [&](const std::string& n) { return source->contains(n); });
      const bool disk_name_missing = std::any_of(group.begin(), group.end(), [&](const auto& n) {
        const auto p = map->placement_of(n);
        return p && p->is_disk() && !source->contains(n);
      });
      if (stored != group.end() && disk_name_missing) also_on_disk.insert(*stored);
    }
  }
  // Disk tensors read in place from the checkpoint, and those converted into a workspace
  // (Note [Offload workspaces]): decided from the headers before anything is written.
  const auto disk_decision = [&](const std::string& name) -> std::optional<io::OffloadEntry> {
    if (!map || name.find("SCB") != std::string::npos) return std::nullopt;
    const auto placement = map->placement_of(name);
    if (!placement || (!placement->is_disk() && !also_on_disk.contains(name))) return std::nullopt;
    std::optional<nn::NamedTensor> target;
    try {
      target = model.find_tensor(name);
    } catch (const MissingTensor&) {
      return std::nullopt;
    }
    if (!options.offload_buffers && target->entry->is_buffer()) return std::nullopt;
    const TensorInfo stored = source->info(name);
    const DType dtype = target_dtype(name, stored, target->tensor(), options);
    return io::OffloadEntry{.name = name, .dtype = dtype, .shape = stored.shape};
  };
  const auto in_place = [&](const io::OffloadEntry& e) {
    return e.dtype == source->info(e.name).dtype &&
           source->file_of(e.name).extension() == ".safetensors";
  };
  io::OffloadIndex converted;
  std::vector<std::string> read_in_place;
  for (const std::string& name : source->names()) {
    if (auto e = disk_decision(name)) {
      if (in_place(*e)) {
        read_in_place.push_back(name);
      } else {
        converted.push_back(std::move(*e));
      }
    }
  }
  std::shared_ptr<io::OffloadWorkspace> workspace;
  std::string fingerprint;
  io::OffloadIndex reusable;
  if (!converted.empty()) {
    if (options.offload_folder.empty()) {
      workspace = io::OffloadWorkspace::temporary();
    } else {
      check_not_a_source_folder(files, options.offload_folder);
      workspace = io::OffloadWorkspace::open(options.offload_folder);
    }
    fingerprint = source_fingerprint(*source, files, options.dtype);
    reusable = workspace->reusable(fingerprint);
    workspace->begin(fingerprint, converted);
  }
  // Converted tensors, and those among them a previous run already wrote the same (same name,
  // dtype and shape under the same fingerprint): looked up per tensor in the loop below.
  std::unordered_map<std::string, const io::OffloadEntry*> to_convert;
  for (const io::OffloadEntry& e : converted) to_convert.emplace(e.name, &e);
  std::unordered_set<std::string> kept;
  for (const io::OffloadEntry& e : reusable) {
    const auto it = to_convert.find(e.name);
    if (it != to_convert.end() && it->second->dtype == e.dtype && it->second->shape == e.shape) {
      kept.insert(e.name);
    }
  }

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
  // Converted one tensor at a time into the workspace (or kept from a previous run that wrote
  // the same bytes); tensors read in place need no copy.
  const auto write_converted = [&](const std::string& name, DType dtype, const TensorInfo& stored) {
    if (!to_convert.contains(name)) return;
    if (kept.contains(name)) {
      disk_index.push_back(io::OffloadEntry{.name = name, .dtype = dtype, .shape = stored.shape});
    } else {
      io::offload_weight(source->load(name, {.dtype = dtype}), name, workspace->path(), disk_index);
    }
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
      write_converted(name, dtype, stored);
    } else {
      // Buffers of disk modules that are not offloaded are loaded too (Accelerate leaves them
      // at their constructor values; docs/deviations.md). They live on the CPU until dispatch.
      // A GPU's tensor is read into a buffer of its own (pread) and copied to the device: a view
      // of the mapping would leave the file's pages in the process's resident set, charged to
      // the CPU although the weights rest on the GPU.
      at::Tensor value = source->load(name, {.dtype = dtype, .copy = placement->is_gpu()});
      if (placement->is_gpu()) value = move_to(value, ExecutionDevice::gpu(placement->index()));
      target->entry->slot->assign(std::move(value), name);
      if (also_on_disk.contains(name)) write_converted(name, dtype, stored);
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
                    model.class_name(), checkpoint, fmt::join(report.missing_keys, ", "),
                    fmt::join(report.unexpected_keys, ", ")),
        ErrorFields{.file = checkpoint});
  }
  if (!report.unexpected_keys.empty()) {
    log_warning(
        "Some weights of the model checkpoint at {} were not used when initializing {}: [{}]. "
        "This may or may not be an issue - make sure that the checkpoint does not have "
        "unnecessary parameters, or that the model definition correctly corresponds to the "
        "checkpoint.",
        checkpoint, model.class_name(), fmt::join(report.unexpected_keys, ", "));
  }
  if (!report.missing_keys.empty()) {
    log_warning("Some weights of {} were not initialized from the model checkpoint at {}: [{}].",
                model.class_name(), checkpoint, fmt::join(report.missing_keys, ", "));
  }
  WeightsMap converted_weights;
  if (workspace) {
    // Published last: a failure above leaves no record that a later run would trust.
    workspace->publish(fingerprint, disk_index);
    std::vector<std::string> names;
    for (const io::OffloadEntry& e : disk_index) names.push_back(e.name);
    // Built from what was just written, not re-read from index.json.
    converted_weights = select_weights(io::OffloadFolder::from_index(workspace->path(), disk_index),
                                       std::move(names), workspace);
  }
  if (converted_weights || !read_in_place.empty()) {
    WeightsMap in_place_weights =
        read_in_place.empty() ? nullptr : select_weights(source, std::move(read_in_place));
    report.disk_weights =
        with_tied_aliases(combine_weights({in_place_weights, converted_weights}), tied_groups);
  }
  if (map && map->uses(Placement::disk()) && !report.disk_weights) {
    report.disk_weights = io::make_memory_source({});  // disk modules with nothing to read
  }
  nn::retie_parameters(model, nn::find_tied_parameters(model));
  return report;
}

}  // namespace

plan::RuntimeOptions runtime_of(const LoadAndDispatchOptions& options) {
  plan::RuntimeOptions rt = options.runtime;
  if (!options.prefetch) {
    rt.streaming = plan::Streaming::kMapped;
    rt.direct_io = false;
    rt.staging_bytes.reset();
    return rt;
  }
  rt.streaming = options.prefetch->lookahead ? plan::Streaming::kPrefetch : plan::Streaming::kOnDemand;
  rt.direct_io = io::reads_whole_pages(options.prefetch->read_mode);
  // One figure for both sides, as --prefetch-bytes gives; the larger when they differ.
  const auto& p = *options.prefetch;
  if (p.host_budget_bytes || p.device_budget_bytes) {
    rt.staging_bytes = std::max(p.host_budget_bytes.value_or(0), p.device_budget_bytes.value_or(0));
  }
  return rt;
}

namespace {

plan::PlanOptions plan_options_of(const LoadAndDispatchOptions& options) {
  return plan::PlanOptions{.no_split_module_classes = options.no_split_module_classes,
                           .no_split_patterns = options.no_split_patterns,
                           .dtype = options.dtype,
                           .offload_buffers = options.offload_buffers};
}

}  // namespace

plan::Resolution resolve_for_dispatch(nn::Module& model, plan::Strategy strategy,
                                      const LoadAndDispatchOptions& options) {
  const plan::ModuleTree tree = plan::ModuleTree::from_module(model);
  return plan::resolve_and_plan(tree,
                                plan::ResolveOptions{.strategy = strategy,
                                                     .max_memory = options.max_memory,
                                                     .extra_reserve = options.reserve,
                                                     .runtime = runtime_of(options)},
                                plan_options_of(options));
}

void apply_resolution(LoadAndDispatchOptions& options, const plan::Resolution& resolution) {
  options.device_map = resolution.plan.plan.device_map;
  if (!options.main_device) options.main_device = resolution.main_device;
  if (options.prefetch) {
    // Note [Staging in the budget]: the staging the plan kept free is what the prefetcher gets.
    options.prefetch->host_budget_bytes = resolution.host_staging_bytes;
    options.prefetch->device_budget_bytes = resolution.device_staging_bytes;
  }
}

plan::DeviceMap load_checkpoint_and_dispatch(nn::Module& model,
                                             const std::filesystem::path& checkpoint,
                                             const LoadAndDispatchOptions& options) {
  return load_checkpoint_and_dispatch(model, io::open_checkpoint(checkpoint), options);
}

plan::DeviceMap load_checkpoint_and_dispatch(nn::Module& model,
                                             const std::shared_ptr<const io::TensorSource>& source,
                                             const LoadAndDispatchOptions& given_options) {
  LoadAndDispatchOptions options = given_options;
  if (const auto* strategy = std::get_if<plan::Strategy>(&options.device_map)) {
    apply_resolution(options, resolve_for_dispatch(model, *strategy, options));
  }
  std::optional<plan::DeviceMap> map;
  std::optional<PrefetchOptions> prefetch = options.prefetch;
  if (const auto* given = std::get_if<plan::DeviceMap>(&options.device_map)) {
    map = *given;
    if (prefetch) {
      // A given map: staging from the same rule, so a map from `ferry plan` runs as planned.
      const plan::Staging staging = plan::staging_for(
          plan::ModuleTree::from_module(model), plan_options_of(options), runtime_of(options));
      if (!prefetch->host_budget_bytes) prefetch->host_budget_bytes = staging.host_bytes;
      if (!prefetch->device_budget_bytes) prefetch->device_budget_bytes = staging.device_bytes;
    }
  }
  const bool any_disk = map && map->uses(Placement::disk());
  LoadReport report = load_checkpoint_in_model(
      model, source,
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
                 DispatchOptions{.main_device = options.main_device,
                                 .offload_dir = options.offload_folder,
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
