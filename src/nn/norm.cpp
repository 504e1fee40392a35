#include "ferry/nn/norm.h"

namespace ferry::nn {
namespace {
void fill_ones(at::Tensor& t) { t.fill_(1); }
void fill_zeros(at::Tensor& t) { t.zero_(); }
const at::Tensor& or_undefined(const TensorRef& ref) {
  static const at::Tensor kUndefined;
  return ref ? *ref : kUndefined;
}
}  // namespace

LayerNorm::LayerNorm(std::int64_t dim, LayerNormOptions options)
    : Callable("LayerNorm"), dim_(dim), eps_(options.eps) {
  if (options.elementwise_affine) {
    weight_ = new_parameter("weight", {dim}, options.dtype, fill_ones);
    if (options.bias) bias_ = new_parameter("bias", {dim}, options.dtype, fill_zeros);
  }
}

at::Tensor LayerNorm::forward(const at::Tensor& x) {
  return at::layer_norm(x, {dim_}, or_undefined(weight_), or_undefined(bias_), eps_);
}

RMSNorm::RMSNorm(std::int64_t dim, double eps, at::ScalarType dtype)
    : Callable("RMSNorm"), eps_(eps) {
  weight_ = new_parameter("weight", {dim}, dtype, fill_ones);
}

at::Tensor RMSNorm::forward(const at::Tensor& x) {
  const at::Tensor h = x.to(at::kFloat);
  const at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  return *weight_ * (h * at::rsqrt(variance + eps_)).to(x.scalar_type());
}

BatchNorm1d::BatchNorm1d(std::int64_t num_features, BatchNormOptions options)
    : Callable("BatchNorm1d"), options_(options) {
  if (options.affine) {
    weight_ = new_parameter("weight", {num_features}, options.dtype, fill_ones);
    bias_ = new_parameter("bias", {num_features}, options.dtype, fill_zeros);
  }
  if (options.track_running_stats) {
    running_mean_ = new_buffer("running_mean", {num_features}, options.dtype, fill_zeros);
    running_var_ = new_buffer("running_var", {num_features}, options.dtype, fill_ones);
    new_buffer("num_batches_tracked", {}, at::kLong, fill_zeros);
  }
}

at::Tensor BatchNorm1d::forward(const at::Tensor& x) {
  // Without running statistics PyTorch normalises with the batch's own statistics.
  const bool use_batch_stats = !running_mean_;
  return at::batch_norm(x, or_undefined(weight_), or_undefined(bias_), or_undefined(running_mean_),
                        or_undefined(running_var_), use_batch_stats, options_.momentum,
                        options_.eps, /*cudnn_enabled=*/true);
}

}  // namespace ferry::nn
