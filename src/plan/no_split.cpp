#include "ferry/plan/no_split.h"

#include <algorithm>
#include <unordered_set>

namespace ferry::plan {
namespace {

// Glob over one component: '*' matches any run of characters (no '.' can occur here).
bool matches_component(std::string_view pattern, std::string_view text) {
  std::size_t p = 0;
  std::size_t t = 0;
  std::size_t star = std::string_view::npos;
  std::size_t resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool is_number(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view last_component(std::string_view name) {
  const std::size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

}  // namespace

bool matches_module_pattern(std::string_view pattern, std::string_view name) {
  while (true) {
    const std::size_t pd = pattern.find('.');
    const std::size_t nd = name.find('.');
    if (!matches_component(pattern.substr(0, pd), name.substr(0, nd))) return false;
    if (pd == std::string_view::npos || nd == std::string_view::npos) {
      return pd == std::string_view::npos && nd == std::string_view::npos;
    }
    pattern.remove_prefix(pd + 1);
    name.remove_prefix(nd + 1);
  }
}

std::vector<char> no_split_flags(const ModuleTree& tree, const NoSplit& no_split) {
  std::vector<char> flags(tree.size(), 0);
  if (no_split.empty()) return flags;
  const std::unordered_set<std::string_view> classes(no_split.module_classes.begin(),
                                                     no_split.module_classes.end());
  for (std::size_t i = 0; i < tree.size(); ++i) {
    const TreeNode& n = tree.nodes()[i];
    if (!n.is_module()) continue;
    bool hit = !n.class_name.empty() && classes.contains(n.class_name);
    for (const std::string& p : no_split.patterns) {
      if (hit) break;
      hit = matches_module_pattern(p, n.name);
    }
    flags[i] = hit ? 1 : 0;
  }
  return flags;
}

std::vector<std::string> infer_no_split_patterns(const ModuleTree& tree) {
  std::vector<std::string> found;
  std::unordered_set<std::string> seen;
  for (const TreeNode& n : tree.nodes()) {
    if (!n.is_module() || n.children.size() < 2 || !n.params.empty()) continue;
    const bool numbered = std::all_of(n.children.begin(), n.children.end(), [&](NodeId c) {
      return is_number(last_component(tree.node(c).name));
    });
    if (!numbered) continue;
    // The parent's path with its own numbered components generalised.
    std::string pattern;
    std::string_view rest = n.name;
    while (!rest.empty()) {
      const std::size_t dot = rest.find('.');
      const std::string_view part = rest.substr(0, dot);
      if (!pattern.empty()) pattern += '.';
      pattern += is_number(part) ? std::string_view("*") : part;
      rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
    }
    pattern += pattern.empty() ? "*" : ".*";
    if (seen.insert(pattern).second) found.push_back(pattern);
  }
  // Drop patterns inside the blocks another pattern already keeps whole.
  std::vector<std::string> out;
  for (const std::string& p : found) {
    const bool nested = std::any_of(found.begin(), found.end(), [&](const std::string& q) {
      return q != p && p.size() > q.size() && p.starts_with(q) && p[q.size()] == '.';
    });
    if (!nested) out.push_back(p);
  }
  return out;
}

}  // namespace ferry::plan
