#pragma once
// Which modules are never split across devices: Accelerate's no_split_module_classes (by class
// name) and, for trees built from checkpoint headers where classes are unknown, module path
// patterns such as "model.layers.*".

#include <string>
#include <string_view>
#include <vector>

#include "ferry/plan/module_tree.h"

namespace ferry::plan {

struct NoSplit {
  std::vector<std::string> module_classes;  // class names ("LlamaDecoderLayer")
  // Module path globs, matched component by component: a component "*" matches any one
  // component, "*" inside a component any run of characters ("model.layers.*", "h.*").
  std::vector<std::string> patterns;

  bool empty() const noexcept { return module_classes.empty() && patterns.empty(); }
};

// True if the dotted module path `name` matches the glob `pattern` (see NoSplit::patterns).
bool matches_module_pattern(std::string_view pattern, std::string_view name);

// One flag per node of `tree`: 1 for modules that must not be split.
std::vector<char> no_split_flags(const ModuleTree& tree, const NoSplit& no_split);

// The repeated numbered blocks of `tree` as patterns: for every module whose children are all
// numbered ("0", "1", ...) and at least two, "<its path with numbers as *>.*"; patterns nested in
// another one are dropped. A Llama checkpoint gives {"model.layers.*"}.
std::vector<std::string> infer_no_split_patterns(const ModuleTree& tree);

}  // namespace ferry::plan
