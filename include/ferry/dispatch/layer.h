#pragma once
// Identifies the 'dispatch' layer library (DESIGN.md); its concepts each have a header beside this one.

#include <string_view>

namespace ferry::dispatch {
std::string_view layer_name();
}  // namespace ferry::dispatch
