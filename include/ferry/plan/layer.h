#pragma once
// Identifies the 'plan' layer library (DESIGN.md); its concepts each have a header beside this one.

#include <string_view>

namespace ferry::plan {
std::string_view layer_name();
}  // namespace ferry::plan
