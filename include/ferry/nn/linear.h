#pragma once
// Fully connected layers: Linear (weight [out, in], y = x Wᵀ + b) and GPT-2's Conv1D
// (weight [in, out], y = x W + b), which differ only in the weight's layout.

#include "ferry/nn/module.h"

namespace ferry::nn {

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

 private:
  friend class Callable<Linear>;
  at::Tensor forward(const at::Tensor& x);

  std::int64_t in_features_;
  std::int64_t out_features_;
  TensorRef weight_;
  TensorRef bias_;
};

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
