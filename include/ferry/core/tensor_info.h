#pragma once
// What is known about a tensor without reading its data: name, dtype and shape. Checkpoint
// readers produce it from headers; planning consumes it.

#include <cstdint>
#include <string>
#include <vector>

#include "ferry/core/dtype.h"

namespace ferry {

struct TensorInfo {
  std::string name;                 // full dotted name, e.g. "model.layers.0.mlp.up_proj.weight"
  DType dtype = DType::kF32;        // stored element type
  std::vector<std::int64_t> shape;  // [] for a scalar

  std::uint64_t numel() const noexcept {
    std::uint64_t n = 1;
    for (std::int64_t d : shape) n *= static_cast<std::uint64_t>(d);
    return n;
  }
  // Stored size in bytes (numel × element size).
  std::uint64_t size_bytes() const noexcept {
    return numel() * static_cast<std::uint64_t>(element_size(dtype));
  }
};

}  // namespace ferry
