#pragma once
// Normalisation layers: LayerNorm, RMSNorm (Llama's, computed in float32), BatchNorm1d
// (inference: normalises with the running statistics).

#include "ferry/nn/module.h"

namespace ferry::nn {

struct LayerNormOptions {
  double eps = 1e-5;                  // added to the variance
  bool elementwise_affine = true;     // register weight (ones) and bias (zeros)
  bool bias = true;                   // with elementwise_affine: register the bias
  at::ScalarType dtype = at::kFloat;  // dtype of weight and bias
};

class LayerNorm : public Callable<LayerNorm> {
 public:
  explicit LayerNorm(std::int64_t dim, LayerNormOptions options = {});

 private:
  friend class Callable<LayerNorm>;
  at::Tensor forward(const at::Tensor& x);

  std::int64_t dim_;
  double eps_;
  TensorRef weight_;
  TensorRef bias_;
};

// y = weight * (x / sqrt(mean(x², last dim) + eps)), normalised in float32 and cast back to the
// input's dtype before the weight is applied (as transformers' LlamaRMSNorm).
class RMSNorm : public Callable<RMSNorm> {
 public:
  explicit RMSNorm(std::int64_t dim, double eps = 1e-6, at::ScalarType dtype = at::kFloat);

 private:
  friend class Callable<RMSNorm>;
  at::Tensor forward(const at::Tensor& x);

  double eps_;
  TensorRef weight_;
};

struct BatchNormOptions {
  double eps = 1e-5;                // added to the running variance
  double momentum = 0.1;            // kept for fidelity; unused in inference
  bool affine = true;               // register weight and bias
  bool track_running_stats = true;  // register running_mean, running_var, num_batches_tracked
  at::ScalarType dtype = at::kFloat;
};

// Inference only: x of shape [N, C] or [N, C, L].
class BatchNorm1d : public Callable<BatchNorm1d> {
 public:
  explicit BatchNorm1d(std::int64_t num_features, BatchNormOptions options = {});

 private:
  friend class Callable<BatchNorm1d>;
  at::Tensor forward(const at::Tensor& x);

  BatchNormOptions options_;
  TensorRef weight_;
  TensorRef bias_;
  TensorRef running_mean_;
  TensorRef running_var_;
};

}  // namespace ferry::nn
