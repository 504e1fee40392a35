#include "models/blocks/layers.h"

#include <array>
#include <vector>

namespace ferry::models::detail {

GatedMlp::GatedMlp(const GatedMlpOptions& o)
    : Callable(o.class_name), intermediate_size_(o.intermediate_size) {
  const nn::LinearOptions linear{.bias = o.bias, .dtype = o.dtype};
  if (o.fused_gate_up) {
    gate_up_ = register_module("gate_up_proj", std::make_shared<nn::Linear>(
                                                   o.hidden_size, 2 * o.intermediate_size, linear));
  } else {
    gate_ = register_module(
        o.gate_name, std::make_shared<nn::Linear>(o.hidden_size, o.intermediate_size, linear));
    up_ = register_module(o.up_name,
                          std::make_shared<nn::Linear>(o.hidden_size, o.intermediate_size, linear));
  }
  down_ = register_module(o.down_name,
                          std::make_shared<nn::Linear>(o.intermediate_size, o.hidden_size, linear));
  act_ = register_module(o.act_name,
                         std::make_shared<nn::Activation>(nn::activation_from_name(o.activation)));
}

at::Tensor GatedMlp::forward(const at::Tensor& x) {
  if (gate_up_) {
    const at::Tensor both = (*gate_up_)(x);
    return (*down_)((*act_)(both.narrow(-1, 0, intermediate_size_)) *
                    both.narrow(-1, intermediate_size_, intermediate_size_));
  }
  // One pass for both products at decode sizes (Note [Grouped calls]).
  const std::array<nn::Linear*, 2> projections{gate_.get(), up_.get()};
  const std::vector<at::Tensor> gate_up = nn::Linear::call_group(projections, x);
  return (*down_)((*act_)(gate_up[0]) * gate_up[1]);
}

OffsetRmsNorm::OffsetRmsNorm(std::string class_name, std::int64_t dim, double eps,
                             at::ScalarType dtype)
    : Callable(std::move(class_name)), eps_(eps) {
  weight_ = new_parameter("weight", {dim}, dtype, [](at::Tensor& w) { w.zero_(); });
}

at::Tensor OffsetRmsNorm::forward(const at::Tensor& x) {
  const at::Tensor h = x.to(at::kFloat);
  const at::Tensor normed = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (normed * (1.0 + weight_->to(at::kFloat))).to(x.scalar_type());
}

}  // namespace ferry::models::detail
