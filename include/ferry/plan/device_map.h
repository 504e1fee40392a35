#pragma once
// DeviceMap: module or tensor path → placement, the `device_map` of Accelerate (what
// load_checkpoint_and_dispatch uses), as an ordered value with a JSON round trip; and the
// functions that clean and check one.

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ferry/core/execution_device.h"
#include "ferry/core/placement.h"
#include "ferry/plan/module_tree.h"

namespace ferry::nn {
class Module;
}

namespace ferry::plan {

class DeviceMap {
 public:
  DeviceMap() = default;
  DeviceMap(std::initializer_list<std::pair<std::string, Placement>> entries);

  // Sets the placement of `path`; a new path is appended, an existing one keeps its position.
  void set(std::string path, Placement placement);
  // Removes `path` if present (linear in the map's size).
  void erase(std::string_view path);
  std::optional<Placement> find(std::string_view path) const;
  // Placement of `path`; throws InvalidDeviceMap naming it when absent.
  Placement at(std::string_view path) const;
  bool contains(std::string_view path) const { return index_.contains(std::string(path)); }
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  // Entries in insertion order.
  const std::vector<std::pair<std::string, Placement>>& entries() const noexcept {
    return entries_;
  }

  // Where the tensor or module `path` rests: the entry of the longest key equal to `path` or a
  // dotted prefix of it ("" matches everything); nullopt when none does.
  std::optional<Placement> placement_of(std::string_view path) const;
  // Distinct placements in first-seen order.
  std::vector<Placement> placements() const;
  // True when some entry rests on `placement` (e.g. whether anything goes to disk).
  bool uses(Placement placement) const;

  // {"model.embed_tokens": 0, "lm_head": "cpu"}: GPUs as JSON integers, "cpu" and "disk" as
  // strings, in order — exactly what Accelerate takes as `device_map`.
  std::string to_json() const;
  // Accepts integers, "cpu", "disk" and GPU strings ("0", "cuda:0"); throws InvalidArgument
  // naming the key for anything else.
  static DeviceMap from_json(std::string_view json);

  // Same keys with the same placements; order is ignored (maps compare as unordered).
  bool operator==(const DeviceMap& other) const;

 private:
  std::vector<std::pair<std::string, Placement>> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

// Accelerate's clean_device_map: every group of two or more keys under one prefix that share a
// placement is replaced by the prefix (appended at the end); recursively from the root.
// O(total key length).
DeviceMap clean_device_map(const DeviceMap& device_map);

// Accelerate's check_device_map: logs the warning "The following device_map keys do not match
// any submodules in the model: ['a', 'b']" for keys that name no module or tensor of `tree`, and
// throws InvalidDeviceMap "The device_map provided does not give any device for the following
// parameters: a.w, a.b" when a state-dict entry (tied parameters under every name) is covered
// by no key.
void check_device_map(const ModuleTree& tree, const DeviceMap& device_map);
void check_device_map(nn::Module& model, const DeviceMap& device_map);

// The execution device of a dispatched map: the first GPU value in map order, else cpu
// (deterministic, unlike Accelerate's set order; docs/deviations.md).
ExecutionDevice main_device(const DeviceMap& device_map);

// Where a block (a device-map entry) computes and whether its weights stream in per call
// (Note [Where a block computes] in device_map.cpp).
struct BlockRole {
  ExecutionDevice device;
  bool offloaded = false;  // rests on meta; loaded from a weights map for each call
  friend bool operator==(const BlockRole&, const BlockRole&) = default;
};
BlockRole role_of(Placement rest, ExecutionDevice main);

}  // namespace ferry::plan
