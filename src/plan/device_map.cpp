#include "ferry/plan/device_map.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "plan/size_format.h"

namespace ferry::plan {

DeviceMap::DeviceMap(std::initializer_list<std::pair<std::string, Placement>> entries) {
  for (const auto& [path, placement] : entries) set(path, placement);
}

void DeviceMap::set(std::string path, Placement placement) {
  auto it = index_.find(path);
  if (it != index_.end()) {
    entries_[it->second].second = placement;
    return;
  }
  index_.emplace(path, entries_.size());
  entries_.emplace_back(std::move(path), placement);
}

void DeviceMap::erase(std::string_view path) {
  auto it = index_.find(std::string(path));
  if (it == index_.end()) return;
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(it->second));
  index_.clear();
  for (std::size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
}

std::optional<Placement> DeviceMap::find(std::string_view path) const {
  auto it = index_.find(std::string(path));
  if (it == index_.end()) return std::nullopt;
  return entries_[it->second].second;
}

Placement DeviceMap::at(std::string_view path) const {
  const auto found = find(path);
  if (!found) {
    throw InvalidDeviceMap(fmt::format("device map has no entry for '{}'", path),
                           ErrorFields{.path = std::string(path)});
  }
  return *found;
}

std::optional<Placement> DeviceMap::placement_of(std::string_view path) const {
  std::string_view probe = path;
  while (true) {
    if (auto p = find(probe)) return p;
    if (probe.empty()) return std::nullopt;
    const std::size_t dot = probe.rfind('.');
    probe = dot == std::string_view::npos ? std::string_view() : probe.substr(0, dot);
  }
}

std::vector<Placement> DeviceMap::placements() const {
  std::vector<Placement> out;
  for (const auto& [path, p] : entries_) {
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  }
  return out;
}

bool DeviceMap::uses(Placement placement) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const auto& entry) { return entry.second == placement; });
}

std::string DeviceMap::to_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [path, p] : entries_) {
    if (p.is_gpu()) {
      j[path] = p.index();
    } else {
      j[path] = p.to_string();
    }
  }
  return j.dump();
}

DeviceMap DeviceMap::from_json(std::string_view json) {
  nlohmann::ordered_json parsed;
  try {
    parsed = nlohmann::ordered_json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(fmt::format("device map: invalid JSON: {}", e.what()));
  }
  FERRY_CHECK(parsed.is_object(), InvalidArgument,
              "device map: expected a JSON object of module path → device");
  DeviceMap map;
  for (const auto& [path, value] : parsed.items()) {
    if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
      map.set(path, Placement::gpu(value.get<int>()));
    } else if (value.is_string()) {
      try {
        map.set(path, Placement::parse(value.get<std::string>()));
      } catch (const InvalidArgument& e) {
        throw InvalidArgument(fmt::format("device map entry '{}': {}", path, e.what()),
                              ErrorFields{.path = path, .actual = value.dump()});
      }
    } else {
      throw InvalidArgument(
          fmt::format("device map entry '{}': expected a GPU index, 'cpu' or 'disk', got {}", path,
                      value.dump()),
          ErrorFields{
              .path = path, .expected = "a GPU index, 'cpu' or 'disk'", .actual = value.dump()});
    }
  }
  return map;
}

bool DeviceMap::operator==(const DeviceMap& other) const {
  if (size() != other.size()) return false;
  for (const auto& [path, p] : entries_) {
    if (other.find(path) != p) return false;
  }
  return true;
}

namespace {

// A prefix tree over the keys of a device map, by dotted components.
struct KeyTrie {
  struct Node {
    std::string_view component;  // last component of this node's path
    int key = -1;                // index of the map entry with exactly this path
    std::vector<int> kids;       // first-seen order
    std::unordered_map<std::string_view, int> by_name;
    // Keys strictly below this node: how many, and their common placement if they share one.
    std::size_t below = 0;
    std::optional<Placement> common;
    bool mixed = false;
  };
  std::vector<Node> nodes{Node{}};

  void add(std::string_view path, int key) {
    int at = 0;
    while (!path.empty()) {
      const std::size_t dot = path.find('.');
      const std::string_view part = path.substr(0, dot);
      auto& by_name = nodes[static_cast<std::size_t>(at)].by_name;
      auto it = by_name.find(part);
      if (it == by_name.end()) {
        const int next = static_cast<int>(nodes.size());
        nodes[static_cast<std::size_t>(at)].by_name.emplace(part, next);
        nodes[static_cast<std::size_t>(at)].kids.push_back(next);
        nodes.emplace_back();
        nodes.back().component = part;
        at = next;
      } else {
        at = it->second;
      }
      path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    }
    nodes[static_cast<std::size_t>(at)].key = key;
  }
};

void merge_into(KeyTrie::Node& into, std::size_t count, std::optional<Placement> common,
                bool mixed) {
  if (count == 0) return;
  if (mixed || (into.below > 0 && into.common != common)) into.mixed = true;
  if (into.below == 0) into.common = common;
  into.below += count;
}

}  // namespace

DeviceMap clean_device_map(const DeviceMap& device_map) {
  const auto& entries = device_map.entries();
  KeyTrie trie;
  for (std::size_t i = 0; i < entries.size(); ++i) trie.add(entries[i].first, static_cast<int>(i));
  // Aggregates of keys strictly below each node; children are created after their parent.
  std::vector<std::size_t> parent(trie.nodes.size(), 0);
  for (std::size_t i = 0; i < trie.nodes.size(); ++i) {
    for (int k : trie.nodes[i].kids) parent[static_cast<std::size_t>(k)] = i;
  }
  for (std::size_t i = trie.nodes.size(); i-- > 1;) {
    KeyTrie::Node& n = trie.nodes[i];
    KeyTrie::Node& up = trie.nodes[parent[i]];
    merge_into(up, n.below, n.common, n.mixed);
    if (n.key >= 0) merge_into(up, 1, entries[static_cast<std::size_t>(n.key)].second, false);
  }
  // The root's own key ("") counts among the keys under the root prefix "".
  KeyTrie::Node& root = trie.nodes[0];
  if (root.key >= 0) merge_into(root, 1, entries[static_cast<std::size_t>(root.key)].second, false);

  std::vector<char> removed(entries.size(), 0);
  std::vector<std::optional<Placement>> overwritten(entries.size());
  std::vector<std::pair<std::string, Placement>> appended;
  // Top-down as clean_device_map recurses: a prefix whose keys share one placement is merged
  // and not descended into.
  auto visit = [&](auto&& self, int at, const std::string& name) -> void {
    const KeyTrie::Node& n = trie.nodes[static_cast<std::size_t>(at)];
    if (n.below > 1 && !n.mixed) {
      auto drop = [&](auto&& drop_self, int sub, bool include_self) -> void {
        const KeyTrie::Node& s = trie.nodes[static_cast<std::size_t>(sub)];
        if (include_self && s.key >= 0) removed[static_cast<std::size_t>(s.key)] = 1;
        for (int k : s.kids) drop_self(drop_self, k, true);
      };
      drop(drop, at, /*include_self=*/at == 0);
      if (at != 0 && n.key >= 0) {
        overwritten[static_cast<std::size_t>(n.key)] = n.common;  // dict assignment keeps position
      } else {
        appended.emplace_back(name, *n.common);
      }
      return;
    }
    for (int k : n.kids) {
      const std::string_view part = trie.nodes[static_cast<std::size_t>(k)].component;
      self(self, k, name.empty() ? std::string(part) : name + "." + std::string(part));
    }
  };
  visit(visit, 0, "");

  DeviceMap out;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (removed[i]) continue;
    out.set(entries[i].first, overwritten[i].value_or(entries[i].second));
  }
  for (auto& [name, p] : appended) out.set(std::move(name), p);
  return out;
}

void check_device_map(const ModuleTree& tree, const DeviceMap& device_map) {
  std::vector<std::string> invalid;
  for (const auto& [path, p] : device_map.entries()) {
    if (!path.empty() && !tree.find(path)) invalid.push_back(path);
  }
  if (!invalid.empty()) {
    log_warning("The following device_map keys do not match any submodules in the model: {}",
                py_list(invalid));
  }
  if (device_map.contains("")) return;
  std::vector<std::string> missing;
  for (const NodeId t : tree.state_dict_order()) {
    const std::string& name = tree.node(t).name;
    if (!device_map.placement_of(name)) missing.push_back(name);
  }
  if (!missing.empty()) {
    const std::string list = fmt::format("{}", fmt::join(missing, ", "));
    throw InvalidDeviceMap(
        "The device_map provided does not give any device for the following parameters: " + list,
        ErrorFields{.path = missing.front(),
                    .expected = "a device for every state-dict entry",
                    .actual = list});
  }
}

// Note [Where a block computes]
// One rule, used by dispatch_model for every block and by the resolver to know whether anything
// streams: a block resting on a GPU computes there with its weights resident; a block resting on
// the CPU computes there when the main device is the CPU, else on the main device with its weights
// streamed from RAM; a block on disk computes on the main device, streamed. Disk is never an
// execution device (ExecutionDevice cannot hold it).
BlockRole role_of(Placement rest, ExecutionDevice main) {
  const std::optional<ExecutionDevice> here = ExecutionDevice::of(rest);
  if (here && (here->is_gpu() || main.is_cpu())) return {.device = *here, .offloaded = false};
  return {.device = main, .offloaded = true};
}

ExecutionDevice main_device(const DeviceMap& device_map) {
  for (const auto& [path, p] : device_map.entries()) {
    if (p.is_gpu()) return ExecutionDevice::gpu(p.index());
  }
  return ExecutionDevice::cpu();
}

}  // namespace ferry::plan
