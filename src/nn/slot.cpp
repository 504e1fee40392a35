#include "ferry/nn/slot.h"

#include <fmt/format.h>

#include "ferry/core/error.h"
#include "ferry/core/shape.h"

namespace ferry::nn {

void Slot::assign(at::Tensor tensor, std::string_view path) {
  if (tensor.sizes() != tensor_.sizes()) {
    throw make_mismatch<ShapeMismatch>("tensor", "shape",
                                       ErrorFields{.path = std::string(path),
                                                   .expected = shape_string(tensor_.sizes()),
                                                   .actual = shape_string(tensor.sizes())});
  }
  tensor_ = std::move(tensor);
}

}  // namespace ferry::nn
