// Tied parameters (spec §2.10–2.11) and fallback allocation (§2.12) of infer_auto_device_map.
#include <algorithm>
#include <deque>

#include "ferry/core/error.h"
#include "plan/allocator.h"

namespace ferry::plan {

Allocator::Ties Allocator::relevant_ties(NodeId entry) const {
  // Accelerate tests `name + "." in member + "."` — a substring test, so entry "1" also counts
  // "11.weight" as inside. Reproduced as is: maps must match Accelerate's.
  const std::string needle = name(entry) + ".";
  Ties ties;
  const auto& groups = tree_.tied_groups();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const auto& dotted = tied_dotted_[g];
    std::size_t inside = 0;
    for (const std::string& member : dotted) inside += member.find(needle) != std::string::npos;
    if (inside == 0 || inside == dotted.size()) continue;
    ties.groups.push_back(g);
    for (std::size_t m = 0; m < dotted.size(); ++m) {
      if (dotted[m].find(needle) == std::string::npos) ties.params.push_back(groups[g][m]);
    }
  }
  return ties;
}

std::optional<NodeId> Allocator::holder_in_queue(NodeId param) const {
  // Queue entries are disjoint subtrees, so at most one proper ancestor is queued.
  for (NodeId a = tree_.node(param).parent; a >= 0; a = tree_.node(a).parent) {
    if (queue_.contains(a)) return a;
  }
  return std::nullopt;
}

Allocator::SizeWithTies Allocator::size_with_ties(const Ties& ties, std::int64_t entry_bits,
                                                  const HolderLookup& holder) const {
  SizeWithTies out{.bits = entry_bits, .holders = {}};
  for (const NodeId param : ties.params) {
    // Accelerate raises IndexError when no queued entry holds the partner (it was placed
    // already); ferry skips it (docs/deviations.md).
    const auto h = holder(param);
    if (!h) continue;
    out.holders.push_back(*h);
    out.bits += static_cast<std::int64_t>(bits_[static_cast<std::size_t>(*h)]) -
                static_cast<std::int64_t>(bits_[static_cast<std::size_t>(param)]);
  }
  return out;
}

std::optional<NodeId> Allocator::fallback_allocate(std::int64_t limit_bits) {
  // convert_file_size_to_int rejects a negative limit, and fallback_allocate then finds nothing.
  if (limit_bits < 0) return std::nullopt;
  const std::vector<NodeId> queued = queue_.in_order();
  std::deque<NodeId> search(queued.begin(), queued.end());
  std::optional<NodeId> found;
  while (!search.empty()) {
    const NodeId id = search.front();
    search.pop_front();
    const Ties ties = tied_dotted_.empty() ? Ties{} : relevant_ties(id);
    const auto in_search = [&](NodeId param) -> std::optional<NodeId> {
      for (const NodeId e : search) {
        if (e != param && tree_.contains(e, param)) return e;
      }
      return std::nullopt;
    };
    const SizeWithTies with_ties = size_with_ties(
        ties, static_cast<std::int64_t>(bits_[static_cast<std::size_t>(id)]), in_search);
    if (with_ties.bits <= limit_bits) {
      found = id;
      break;
    }
    if (!can_split(id)) continue;
    const std::vector<NodeId> parts = split_entries(id);
    search.insert(search.begin(), parts.begin(), parts.end());
  }
  if (!found) return std::nullopt;

  // Split every queued ancestor of the found entry, outermost first, then take it out.
  std::vector<NodeId> ancestors;
  for (NodeId a = tree_.node(*found).parent; a > ModuleTree::root(); a = tree_.node(a).parent) {
    ancestors.push_back(a);
  }
  for (auto it = ancestors.rbegin(); it != ancestors.rend(); ++it) {
    if (queue_.contains(*it)) queue_.replace(*it, split_entries(*it));
  }
  const bool removed = queue_.remove(*found);
  FERRY_ASSERT(removed, "fallback entry '{}' is not in the queue", name(*found));
  return found;
}

}  // namespace ferry::plan
