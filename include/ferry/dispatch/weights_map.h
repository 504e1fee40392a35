#pragma once
// Weights maps: where an offloaded module's tensors are read from at each forward. Any
// io::TensorSource serves (an in-memory CPU state dict, an offload folder, a checkpoint's
// safetensors shards read in place); several are combined behind one O(1) lookup.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ferry/dispatch/align_devices.h"

namespace ferry::dispatch {

// Accelerate's OffloadedWeightsLoader: the union of `sources`, an earlier source winning for a
// name present in several (the in-memory state dict before the offload folder). Null sources are
// ignored. Lookups are O(1) (a hash of every name, built once).
WeightsMap combine_weights(std::vector<WeightsMap> sources);

// The entries of `state` that belong to one of `modules` (a name equal to a module path or under
// it followed by '.'; "a.1" does not capture "a.10"; "" captures everything).
std::vector<std::pair<std::string, at::Tensor>> extract_submodules_state_dict(
    const std::vector<std::pair<std::string, at::Tensor>>& state,
    const std::vector<std::string>& modules);

// `weights` plus, for each tied group, every name of the group that `weights` lacks, read as the
// first name of the group it has (a checkpoint stores a tied weight once).
WeightsMap with_tied_aliases(WeightsMap weights,
                             const std::vector<std::vector<std::string>>& tied_groups);

// The tensors `names` of `source` as a source of their own (MissingTensor for a name it lacks),
// keeping `owner` (e.g. the workspace the files lie in) alive as long as the result lives.
WeightsMap select_weights(WeightsMap source, std::vector<std::string> names,
                          std::shared_ptr<const void> owner = nullptr);

// An in-memory weights map over `tensors`, each moved to the CPU.
WeightsMap cpu_weights(const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace ferry::dispatch
