#pragma once
// Size estimates like `accelerate estimate-memory` (spec §2.20): largest layer and total size
// of a model held in float32, float16, int8 and int4, and the same table.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/plan/module_tree.h"
#include "ferry/plan/no_split.h"

namespace ferry::plan {

struct SizeEstimate {
  std::string dtype;               // "float32", "float16", "int8", "int4"
  double largest_layer_bytes = 0;  // as Accelerate: float32 sizes divided by 1, 2, 4, 8
  double total_bytes = 0;
  std::optional<double> training_bytes;  // Adam training peak; nullopt ("N/A") for int8/int4
};

// Sizes with every floating tensor counted as float32 (Accelerate builds the model in float32;
// integer and bool tensors keep their size); layers per `no_split` (the model's own
// _no_split_modules in Accelerate).
std::vector<SizeEstimate> estimate_memory(const ModuleTree& tree, const NoSplit& no_split = {});

// Accelerate's convert_bytes: binary steps labelled "bytes", "KB", "MB", "GB", "TB", "PB", the
// value rounded to 2 decimals as Python prints it ("1.5 GB", "236 bytes").
std::string convert_bytes(double size, bool is_integer = false);

// The box-drawn table of estimate-memory, titled "Memory Usage for loading `<model>`".
std::string format_estimate_table(std::string_view model_name,
                                  const std::vector<SizeEstimate>& rows);

}  // namespace ferry::plan
