#include "ferry/nn/norm.h"

#include "ferry/kernels/fused.h"

namespace ferry::nn {
namespace {
void fill_ones(at::Tensor& t) { t.fill_(1); }
void fill_zeros(at::Tensor& t) { t.zero_(); }
const at::Tensor& or_undefined(const TensorRef& ref) {
  static const at::Tensor kUndefined;
  return ref ? *ref : kUndefined;
}
// The tensor of `ref` in `dtype` (Note [Compute dtype]: norm weights are stored in the
// checkpoint's dtype and applied in the input's); undefined when not registered.
at::Tensor in_dtype(const TensorRef& ref, at::ScalarType dtype) {
  const at::Tensor& t = or_undefined(ref);
  return !t.defined() || t.scalar_type() == dtype ? t : t.to(dtype);
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
  return at::layer_norm(x, {dim_}, in_dtype(weight_, x.scalar_type()),
                        in_dtype(bias_, x.scalar_type()), eps_);
}

RMSNorm::RMSNorm(std::int64_t dim, double eps, at::ScalarType dtype)
    : Callable("RMSNorm"), eps_(eps) {
  weight_ = new_parameter("weight", {dim}, dtype, fill_ones);
}

at::Tensor RMSNorm::forward(const at::Tensor& x) {
  // One pass for a float32 input on the CPU (Note [Fused layer steps]); the same formula below.
  if (kernels::rms_norm_applies(x, or_undefined(weight_))) {
    return kernels::rms_norm(x, *weight_, eps_);
  }
  const at::Tensor h = x.to(at::kFloat);
  const at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  return in_dtype(weight_, x.scalar_type()) * (h * at::rsqrt(variance + eps_)).to(x.scalar_type());
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
  const at::ScalarType t = x.scalar_type();
  return at::batch_norm(x, in_dtype(weight_, t), in_dtype(bias_, t), in_dtype(running_mean_, t),
                        in_dtype(running_var_, t), use_batch_stats, options_.momentum,
                        options_.eps, /*cudnn_enabled=*/true);
}

}  // namespace ferry::nn
