#pragma once
// Printing of tensor shapes in error messages and tables: "[4096, 11008]", "[]" for scalars.

#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

namespace ferry {

std::string shape_string(c10::ArrayRef<std::int64_t> shape);

}  // namespace ferry
