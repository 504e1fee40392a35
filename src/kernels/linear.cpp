#include "ferry/kernels/linear.h"

#include "ferry/core/error.h"
#include "ferry/core/shape.h"

namespace ferry::kernels {

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                  std::string_view what) {
  FERRY_CHECK(w.dim() == 2, ShapeMismatch, "{}: weight has shape {}, expected [out, in]", what,
              shape_string(w.sizes()));
  FERRY_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), ShapeMismatch,
              "{}: input has shape {}, expected [..., {}] for weight {}", what,
              shape_string(x.sizes()), w.size(1), shape_string(w.sizes()));
  // Portable path: the weight in the input's dtype (a copy when they differ).
  const at::Tensor wc = w.scalar_type() == x.scalar_type() ? w : w.to(x.scalar_type());
  if (!bias) return at::linear(x, wc);
  const at::Tensor bc = bias->scalar_type() == x.scalar_type() ? *bias : bias->to(x.scalar_type());
  return at::linear(x, wc, bc);
}

}  // namespace ferry::kernels
