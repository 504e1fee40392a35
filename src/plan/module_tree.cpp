#include "ferry/plan/module_tree.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "ferry/core/error.h"
#include "plan/tree_builder.h"

namespace ferry::plan {
namespace {


bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Headers carry no declaration order, so siblings from checkpoint names are ordered by the
// conventions of Hugging Face models: input embeddings first, output heads last, numbered blocks
// by value, everything else by name.
int sibling_rank(std::string_view name) {
  static constexpr std::array<std::string_view, 9> kInputs{
      "embed_tokens",   "embed_in",   "wte",   "wpe",   "word_embeddings",
      "tok_embeddings", "embeddings", "embed", "shared"};
  static constexpr std::array<std::string_view, 5> kHeads{"lm_head", "output", "score",
                                                          "classifier", "embed_out"};
  if (std::find(kInputs.begin(), kInputs.end(), name) != kInputs.end()) return 0;
  if (std::find(kHeads.begin(), kHeads.end(), name) != kHeads.end()) return 2;
  return 1;
}

bool natural_less(std::string_view a, std::string_view b) {
  const int ra = sibling_rank(a);
  const int rb = sibling_rank(b);
  if (ra != rb) return ra < rb;
  const bool da = all_digits(a);
  const bool db = all_digits(b);
  if (da && db) {
    const std::string_view ta = a.substr(std::min(a.find_first_not_of('0'), a.size() - 1));
    const std::string_view tb = b.substr(std::min(b.find_first_not_of('0'), b.size() - 1));
    if (ta.size() != tb.size()) return ta.size() < tb.size();
    if (ta != tb) return ta < tb;
    return a < b;
  }
  if (da != db) return da;
  return a < b;
}

}  // namespace

std::string join_name(std::string_view prefix, std::string_view name) {
  if (prefix.empty()) return std::string(name);
  std::string out;
  out.reserve(prefix.size() + 1 + name.size());
  out.append(prefix).append(".").append(name);
  return out;
}

NodeId TreeBuilder::add_node(TreeNode node) {
  tree_.nodes_.push_back(std::move(node));
  slots_.push_back(nullptr);
  return static_cast<NodeId>(tree_.nodes_.size() - 1);
}

void TreeBuilder::mark_shared() {
  std::unordered_set<const void*> seen_params;
  std::unordered_set<const void*> seen_buffers;
  std::unordered_map<const void*, std::size_t> group_of;
  std::vector<std::vector<NodeId>> groups;
  for (const NodeId m : modules()) {
    for (const NodeId p : tree_.nodes_[m].params) {
      const void* slot = slots_[static_cast<std::size_t>(p)];
      tree_.nodes_[p].counted = seen_params.insert(slot).second;
      auto [it, inserted] = group_of.emplace(slot, groups.size());
      if (inserted) groups.emplace_back();
      groups[it->second].push_back(p);
    }
  }
  for (const NodeId m : modules()) {
    for (const NodeId b : tree_.nodes_[m].buffers) {
      tree_.nodes_[b].counted = seen_buffers.insert(slots_[static_cast<std::size_t>(b)]).second;
    }
  }
  for (auto& g : groups) {
    if (g.size() < 2) continue;
    std::sort(g.begin(), g.end(),
              [&](NodeId a, NodeId b) { return tree_.nodes_[a].name < tree_.nodes_[b].name; });
    tree_.tied_groups_.push_back(std::move(g));
  }
}

std::vector<NodeId> TreeBuilder::modules() const {
  std::vector<NodeId> out;
  for (std::size_t i = 0; i < tree_.nodes_.size(); ++i) {
    if (tree_.nodes_[i].is_module()) out.push_back(static_cast<NodeId>(i));
  }
  return out;
}

ModuleTree TreeBuilder::finish() && {
  tree_.finish();
  return std::move(tree_);
}

namespace {

// A prefix tree over dotted checkpoint names, before it is laid out in pre-order.
struct NameTrie {
  struct Entry {
    std::string component;
    int tensor = -1;  // index into the input, or -1 for a module
    std::map<std::string, int, std::less<>> kids;
  };
  std::vector<Entry> entries{Entry{}};

  void insert(const TensorInfo& info, int index) {
    const std::string& name = info.name;
    FERRY_CHECK(!name.empty(), InvalidArgument, "checkpoint tensor with an empty name");
    int at = 0;
    std::size_t start = 0;
    while (true) {
      const std::size_t dot = name.find('.', start);
      const std::string_view part = std::string_view(name).substr(
          start, dot == std::string::npos ? std::string::npos : dot - start);
      FERRY_CHECK(!part.empty(), InvalidArgument,
                  "checkpoint tensor name '{}' has an empty component", name);
      FERRY_CHECK(entries[static_cast<std::size_t>(at)].tensor < 0, InvalidArgument,
                  "checkpoint tensor '{}' is also the module prefix of '{}'",
                  name.substr(0, start - 1), name);
      auto& kids = entries[static_cast<std::size_t>(at)].kids;
      auto it = kids.find(part);
      int next = 0;
      if (it == kids.end()) {
        next = static_cast<int>(entries.size());
        kids.emplace(std::string(part), next);
        entries.push_back(Entry{.component = std::string(part)});
      } else {
        next = it->second;
      }
      at = next;
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    Entry& leaf = entries[static_cast<std::size_t>(at)];
    FERRY_CHECK(leaf.tensor < 0, InvalidArgument, "checkpoint tensor '{}' appears twice", name);
    FERRY_CHECK(leaf.kids.empty(), InvalidArgument,
                "checkpoint tensor '{}' is also the module prefix of other tensors", name);
    leaf.tensor = index;
  }
};

}  // namespace

ModuleTree ModuleTree::from_tensors(std::span<const TensorInfo> tensors) {
  NameTrie trie;
  for (std::size_t i = 0; i < tensors.size(); ++i) trie.insert(tensors[i], static_cast<int>(i));

  TreeBuilder builder;
  // Explicit recursion over the trie: direct tensors become parameters, then module children.
  auto lay_out = [&](auto&& self, int at, const std::string& name, NodeId parent) -> NodeId {
    const NodeId id = builder.add_node({.name = name, .parent = parent});
    std::vector<const NameTrie::Entry*> kids;
    for (const auto& [component, k] : trie.entries[static_cast<std::size_t>(at)].kids) {
      kids.push_back(&trie.entries[static_cast<std::size_t>(k)]);
    }
    std::stable_sort(kids.begin(), kids.end(), [](const auto* a, const auto* b) {
      return natural_less(a->component, b->component);
    });
    std::vector<NodeId> params;
    std::vector<NodeId> children;
    for (const auto* kid : kids) {
      if (kid->tensor < 0) continue;
      const TensorInfo& info = tensors[static_cast<std::size_t>(kid->tensor)];
      const NodeId t = builder.add_node({.name = info.name,
                                         .kind = NodeKind::kParameter,
                                         .element = info.dtype,
                                         .numel = info.numel(),
                                         .parent = id});
      builder.node(t).end = t + 1;
      params.push_back(t);
    }
    for (const auto* kid : kids) {
      if (kid->tensor >= 0) continue;
      const auto kid_index = static_cast<int>(kid - trie.entries.data());
      children.push_back(self(self, kid_index, join_name(name, kid->component), id));
    }
    TreeNode& node = builder.node(id);
    node.params = std::move(params);
    node.children = std::move(children);
    node.end = builder.size();
    return id;
  };
  lay_out(lay_out, 0, "", -1);
  return std::move(builder).finish();
}

void ModuleTree::finish() {
  index_.reserve(nodes_.size());
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    index_.emplace(nodes_[i].name, static_cast<NodeId>(i));
  }
}

std::optional<NodeId> ModuleTree::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::vector<NodeId> ModuleTree::tensors_in_size_order() const {
  std::vector<NodeId> out;
  out.reserve(nodes_.size());
  for (const TreeNode& n : nodes_) {
    if (n.is_module()) out.insert(out.end(), n.params.begin(), n.params.end());
  }
  for (const TreeNode& n : nodes_) {
    if (n.is_module()) out.insert(out.end(), n.buffers.begin(), n.buffers.end());
  }
  return out;
}

std::vector<NodeId> ModuleTree::state_dict_order() const {
  std::vector<NodeId> out;
  for (const TreeNode& n : nodes_) {
    if (!n.is_module()) continue;
    out.insert(out.end(), n.params.begin(), n.params.end());
    for (const NodeId b : n.buffers) {
      if (node(b).persistent) out.push_back(b);
    }
  }
  return out;
}

}  // namespace ferry::plan
