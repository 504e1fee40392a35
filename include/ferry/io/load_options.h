#pragma once
// How a stored tensor becomes a LibTorch tensor: the one explicit place where dtype and device
// conversions are asked for. The default gives a CPU tensor of the stored dtype, which is a
// zero-copy view of the file where the reader maps it and alignment allows.

#include <c10/core/Device.h>

#include <optional>

#include "ferry/core/dtype.h"

namespace ferry::io {

struct LoadOptions {
  std::optional<DType> dtype;      // convert to this dtype; nullopt keeps the stored dtype
  c10::Device device = c10::kCPU;  // device of the result
  bool copy = false;               // own the memory even where a view of the file would do
};

}  // namespace ferry::io
