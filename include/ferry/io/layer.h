#pragma once
// Identifies the 'io' layer library (DESIGN.md); its concepts each have a header beside this one.

#include <string_view>

namespace ferry::io {
std::string_view layer_name();
}  // namespace ferry::io
