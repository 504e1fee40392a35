#pragma once
// Tied parameters: one slot registered under several names (e.g. GPT-2's wte.weight and
// lm_head.weight).

#include <string>
#include <vector>

#include "ferry/nn/module.h"

namespace ferry::nn {

// Groups of full parameter names that share one slot; each group sorted, groups in the order their
// first name is met in named_parameters. Parameters that are not tied appear in no group.
std::vector<std::vector<std::string>> find_tied_parameters(Module& model);

// For each group, the slot of the first member whose tensor is not on the meta device is
// registered under every name of the group (nothing happens when all are on meta). Throws
// MissingTensor for a name that is not a parameter of `model`.
void retie_parameters(Module& model, const std::vector<std::vector<std::string>>& tied_groups);

}  // namespace ferry::nn
