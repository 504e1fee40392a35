#pragma once
// dispatch_model, cpu_offload, disk_offload, and moving a dispatched model (spec §1 items 3, 5, 6
// and §2.17).

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/execution_device.h"
#include "ferry/core/placement.h"
#include "ferry/dispatch/align_devices.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/plan/device_map.h"

namespace ferry::dispatch {

// Where a block resting in CPU RAM computes when the main device is a GPU (Note [Compute where
// the weights rest] in align_devices.cpp).
struct ComputePolicy {
  enum class Where {
    kMainDevice,  // stream its weights to the main device (Accelerate's behaviour)
    kWeights,     // run it on the CPU when a call has at most max_rows rows
  };
  Where where = Where::kMainDevice;
  std::int64_t max_rows = 16;  // batch x tokens; see docs/design.md for how it was chosen
};

struct DispatchOptions {
  std::optional<ExecutionDevice> main_device;  // default: first GPU value in map order, else cpu
  WeightsMap state_dict;                 // CPU weights of cpu modules; default: the model's own
  std::filesystem::path offload_dir;     // where disk modules' weights are (written if no index)
  WeightsMap offload_index;              // disk weights already somewhere (e.g. in place)
  bool offload_buffers = false;          // offload persistent buffers of offloaded modules too
  std::vector<std::string> skip_keys;    // struct fields of inputs/outputs never moved
  std::vector<std::string> preload_module_classes;  // load whole subtrees at their forward
  bool force_hooks = false;                         // attach hooks even for a single-device map
  // Offloaded blocks stream through a prefetcher (model_prefetcher(model)); nullopt loads each
  // block from its weights map when it runs, as Accelerate does.
  std::optional<PrefetchOptions> prefetch = PrefetchOptions{};
  ComputePolicy compute;
};

// Places `model` per `device_map`. check_device_map first; a single-device map without
// force_hooks just moves the model there; otherwise hooks: modules on GPUs run there, modules on
// "cpu" (when the main device is a GPU) and "disk" rest on meta and are loaded per forward from
// the CPU state dict or the offload folder. Throws InvalidDeviceMap for disk modules without an
// offload_dir or offload_index. The map is remembered (hf_device_map).
void dispatch_model(nn::Module& model, const plan::DeviceMap& device_map,
                    DispatchOptions options = {});

// Accelerate's check_tied_parameters_on_same_device: logs "Tied parameters are on different
// devices: {...}. Please modify your custom device map or set `device_map='auto'`. " when the
// names of one tied group rest on different placements under `device_map`. Called by
// dispatch_model.
void check_tied_parameters_on_same_device(nn::Module& model, const plan::DeviceMap& device_map);

// The device map `model` was dispatched with (Accelerate's hf_device_map); nullopt if none.
std::optional<plan::DeviceMap> hf_device_map(const nn::Module& model);

struct OffloadOptions {
  std::optional<ExecutionDevice> execution_device;  // default: where the first parameter is
  bool offload_buffers = false;
  WeightsMap state_dict;  // default: the model's own, copied to the CPU
  std::vector<std::string> preload_module_classes;
  std::optional<PrefetchOptions> prefetch = PrefetchOptions{};  // as in DispatchOptions
};

// Every parameter rests on the CPU (weights map) and is brought to the execution device per
// submodule forward.
void cpu_offload(nn::Module& model, OffloadOptions options = {});

// Writes the model's state dict to `offload_dir` (unless it already has an index.json) and runs
// every submodule from there.
void disk_offload(nn::Module& model, const std::filesystem::path& offload_dir,
                  OffloadOptions options = {});

// Moves every tensor of a model to `device`. For a dispatched model (one with hooks) this logs
// "You shouldn't move a model that is dispatched using ferry hooks." and, if any parameter is
// offloaded (on meta), throws InvalidDeviceMap "You can't move a model that has some modules
// offloaded to cpu or disk.".
void move_model(nn::Module& model, ExecutionDevice device);

}  // namespace ferry::dispatch
