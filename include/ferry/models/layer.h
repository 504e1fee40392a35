#pragma once
// Identifies the 'models' layer library (DESIGN.md); its concepts each have a header beside this one.

#include <string_view>

namespace ferry::models {
std::string_view layer_name();
}  // namespace ferry::models
