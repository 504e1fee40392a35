#include "ferry/nn/linear.h"

#include <cmath>

#include "ferry/kernels/linear.h"

namespace ferry::nn {
namespace {
// PyTorch's default for Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
std::function<void(at::Tensor&)> uniform_fan_in(std::int64_t fan_in) {
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  return [bound](at::Tensor& t) { t.uniform_(-bound, bound); };
}
}  // namespace

Linear::Linear(std::int64_t in_features, std::int64_t out_features, LinearOptions options)
    : Callable("Linear"), in_features_(in_features), out_features_(out_features) {
  weight_ = new_parameter("weight", {out_features, in_features}, options.dtype,
                          uniform_fan_in(in_features));
  if (options.bias) {
    bias_ = new_parameter("bias", {out_features}, options.dtype, uniform_fan_in(in_features));
  }
}

at::Tensor Linear::forward(const at::Tensor& x) {
  return kernels::linear(x, *weight_, bias_ ? std::optional<at::Tensor>(*bias_) : std::nullopt,
                         "Linear");
}

Conv1D::Conv1D(std::int64_t out_features, std::int64_t in_features, at::ScalarType dtype)
    : Callable("Conv1D"), out_features_(out_features) {
  // transformers initialises Conv1D weights with N(0, 0.02) and zero bias.
  weight_ = new_parameter("weight", {in_features, out_features}, dtype,
                          [](at::Tensor& t) { t.normal_(0.0, 0.02); });
  bias_ = new_parameter("bias", {out_features}, dtype, [](at::Tensor& t) { t.zero_(); });
}

at::Tensor Conv1D::forward(const at::Tensor& x) {
  std::vector<std::int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_features_;
  at::Tensor flat = x.reshape({-1, x.size(-1)});
  // Note [Compute dtype]: a weight stored in another dtype than the input is converted for this
  // call only (the slot keeps the stored one).
  const at::Tensor& w = *weight_;
  const at::Tensor& b = *bias_;
  const at::ScalarType t = x.scalar_type();
  return at::addmm(b.scalar_type() == t ? b : b.to(t), flat, w.scalar_type() == t ? w : w.to(t))
      .view(out_shape);
}

}  // namespace ferry::nn
