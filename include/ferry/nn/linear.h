#pragma once
// Fully connected layers: Linear (weight [out, in], y = x Wᵀ + b) and GPT-2's Conv1D
// (weight [in, out], y = x W + b), which differ only in the weight's layout.

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ferry/nn/module.h"

namespace ferry::kernels {
struct Product;
}

namespace ferry::nn {

// Inputs per float32 scale of an int8 Linear weight (Note [int8 Linear weights] in linear.cpp).
inline constexpr std::int64_t kInt8GroupSize = 32;

struct LinearOptions {
  bool bias = true;                   // register a bias of shape [out_features]
  at::ScalarType dtype = at::kFloat;  // dtype of weight and bias
};

class Linear : public Callable<Linear> {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, LinearOptions options = {});
  std::int64_t in_features() const noexcept { return in_features_; }
  std::int64_t out_features() const noexcept { return out_features_; }
  const at::Tensor& weight() const { return *weight_; }

  // Holds the weight as int8 values with float16 scales (Note [int8 Linear weights]): `weight`
  // becomes int8 [out, in] and `weight_scale` float16 [out, in / kInt8GroupSize] is registered.
  // A real weight is quantized; a meta one is only re-typed (a loader fills both). Throws
  // InvalidArgument naming the layer when in_features is not a multiple of kInt8GroupSize, or
  // when it is quantized already.
  void quantize_int8();
  bool is_quantized() const noexcept { return static_cast<bool>(weight_scale_); }

  // (*layers[i])(x) for each layer, in order, each through its hook. When every hook is
  // groupable (or absent) and the hooks leave one input for all, the products are computed
  // together (kernels::linear_group: one pass over the threads at decode sizes), with the same
  // results (Note [Grouped calls] in linear.cpp). q/k/v and gate/up projections call this.
  static std::vector<at::Tensor> call_group(std::span<Linear* const> layers, const at::Tensor& x);

 private:
  friend class Callable<Linear>;
  at::Tensor forward(const at::Tensor& x);
  kernels::Product product() const;  // the weight (int8 or not) and bias forward multiplies by

  std::int64_t in_features_;
  std::int64_t out_features_;
  TensorRef weight_;
  TensorRef bias_;
  TensorRef weight_scale_;  // set when quantized
};

// Quantizes (Linear::quantize_int8) every Linear under `root` whose dotted path `select` accepts
// and whose in_features is a multiple of kInt8GroupSize; the others keep their weights. Returns
// the paths of the weights quantized ("model.layers.0.mlp.up_proj.weight"), in walk order.
std::vector<std::string> quantize_linears(Module& root,
                                          const std::function<bool(const std::string&)>& select);

// GPT-2's Conv1D(nf, nx): in_features = nx, out_features = nf, weight [nx, nf], bias [nf].
class Conv1D : public Callable<Conv1D> {
 public:
  Conv1D(std::int64_t out_features, std::int64_t in_features, at::ScalarType dtype = at::kFloat);

 private:
  friend class Callable<Conv1D>;
  at::Tensor forward(const at::Tensor& x);

  std::int64_t out_features_;
  TensorRef weight_;
  TensorRef bias_;
};

}  // namespace ferry::nn
