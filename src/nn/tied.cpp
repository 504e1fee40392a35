#include "ferry/nn/tied.h"

#include <algorithm>
#include <unordered_map>

namespace ferry::nn {

std::vector<std::vector<std::string>> find_tied_parameters(Module& model) {
  std::vector<std::vector<std::string>> groups;
  std::unordered_map<const Slot*, std::size_t> group_of;
  for (const NamedTensor& p : model.named_parameters({.remove_duplicate = false})) {
    auto [it, inserted] = group_of.emplace(p.slot().get(), groups.size());
    if (inserted) groups.emplace_back();
    groups[it->second].push_back(p.name);
  }
  std::erase_if(groups, [](const auto& g) { return g.size() < 2; });
  for (auto& g : groups) std::sort(g.begin(), g.end());
  return groups;
}

void retie_parameters(Module& model, const std::vector<std::vector<std::string>>& tied_groups) {
  for (const auto& group : tied_groups) {
    SlotPtr source;
    for (const std::string& name : group) {
      NamedTensor t = model.find_tensor(name);
      if (!t.tensor().is_meta()) {
        source = t.slot();
        break;
      }
    }
    if (!source) continue;
    for (const std::string& name : group) model.set_slot(name, source);
  }
}

}  // namespace ferry::nn
