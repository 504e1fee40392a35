#include "ferry/nn/linear.h"

#include <cmath>
#include <optional>

#include "ferry/core/error.h"
#include "ferry/kernels/linear.h"
#include "ferry/kernels/quantized.h"

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

// Note [int8 Linear weights]
// A quantized Linear holds two ordinary tensors where it held one: `weight`, int8 [out, in] (the
// same shape, so a slot's shape check still guards it), and `weight_scale`, float16
// [out, in / 32], one symmetric scale per 32 consecutive inputs (kernels' group-32 scheme, Note
// [int8 group size]; float16, Note [int8 scales in float16]; an int8 model saved with float32
// scales keeps them). The names are those of compressed checkpoints. Planning, module sizes, the
// offload folder's index (dtype + shape) and streaming see plain tensors with plain byte counts:
// nothing in plan/ or dispatch/ knows about quantization. Only layers whose in_features is a
// multiple of 32 are quantized, so the scale's shape [out, in / g] determines the group size g:
// weights written with another group size have another scale shape and are rejected by the shape
// checks of loading, never read with the wrong group.
void Linear::quantize_int8() {
  FERRY_CHECK(!weight_scale_, InvalidArgument, "Linear [{}, {}]: its weight is quantized already",
              out_features_, in_features_);
  FERRY_CHECK(in_features_ % kInt8GroupSize == 0, InvalidArgument,
              "Linear [{}, {}]: int8 weights need in_features divisible by {}, got {}",
              out_features_, in_features_, kInt8GroupSize, in_features_);
  const at::Tensor& w = *weight_;
  const std::vector<std::int64_t> scale_shape{out_features_, in_features_ / kInt8GroupSize};
  if (w.is_meta()) {
    find_entry("weight")->slot->assign(at::empty(w.sizes(), w.options().dtype(at::kChar)),
                                       "weight");
    weight_scale_ =
        register_parameter("weight_scale", at::empty(scale_shape, w.options().dtype(at::kHalf)));
    return;
  }
  kernels::QuantizedWeight q;
  try {
    q = kernels::quantize(w, kernels::QuantScheme::kGroup32);
  } catch (const InvalidArgument& e) {  // a weight too large for float16 scales
    throw InvalidArgument(fmt::format("Linear [{}, {}]: {}", out_features_, in_features_, e.what()),
                          e.fields());
  }
  find_entry("weight")->slot->assign(std::move(q.values), "weight");
  weight_scale_ = register_parameter("weight_scale", std::move(q.scales));
}

kernels::Product Linear::product() const {
  kernels::Product p{.weight = *weight_, .what = "Linear"};
  if (bias_) p.bias = *bias_;
  if (weight_scale_) {
    // The kernels read float16 and float32 scales; a storage dtype (LoadModelOptions::dispatch
    // .dtype) may have made them bfloat16.
    const at::Tensor& s = *weight_scale_;
    const bool read = s.scalar_type() == at::kHalf || s.scalar_type() == at::kFloat;
    p.weight = kernels::QuantizedWeight{.values = *weight_,
                                        .scales = read ? s : s.to(at::kFloat),
                                        .scheme = kernels::QuantScheme::kGroup32};
  }
  return p;
}

at::Tensor Linear::forward(const at::Tensor& x) { return kernels::linear(x, product()); }

// Note [Grouped calls]
// ~~~~~~~~~~~~~~~~~~~~
// q, k and v (gate and up) read the same input, and at decode sizes computing them in one pass
// saves two forks and joins of the thread team and, for int8, two quantizations of x (Note
// [Grouped products] in src/kernels/gemv.cpp). Every call still goes through its module's hook
// (Note [Hook entry point]), in a different order: all pre_forwards, the products, then each
// post_forward with its own output. That order is only safe when no pre_forward materializes
// weights (several offloaded weights would be resident at once, past what the budget counted), so
// each hook is asked (ModelHook::groupable); one that says no sends the whole group through the
// ordinary one-by-one calls. After the pre_forwards, every layer must see the same input (a hook
// may have moved it); otherwise each layer computes its own product.
std::vector<at::Tensor> Linear::call_group(std::span<Linear* const> layers, const at::Tensor& x) {
  std::vector<at::Tensor> out;
  out.reserve(layers.size());
  std::vector<std::shared_ptr<ModelHook>> hooks;  // kept alive for the whole call
  hooks.reserve(layers.size());
  // Grouped when every hook allows it and all agree on autograd (each forward would run with
  // the same grad mode).
  const auto no_grad_of = [](const std::shared_ptr<ModelHook>& h) { return h && h->no_grad(); };
  bool grouped = layers.size() >= 2;
  for (Linear* layer : layers) {
    hooks.push_back(layer->hook());
    const std::shared_ptr<ModelHook>& h = hooks.back();
    grouped = grouped && (!h || h->groupable()) && no_grad_of(h) == no_grad_of(hooks.front());
  }
  if (!grouped) {
    for (Linear* layer : layers) out.push_back((*layer)(x));
    return out;
  }
  std::vector<at::Tensor> inputs(layers.size(), x);
  bool same = true;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (hooks[i]) {
      TensorView view;
      view.visit(inputs[i]);
      hooks[i]->pre_forward(*layers[i], view);
    }
    same = same && inputs[i].is_same(inputs.front());
  }
  {
    std::optional<at::NoGradGuard> guard;
    if (no_grad_of(hooks.front())) guard.emplace();
    if (same) {
      std::vector<kernels::Product> products;
      products.reserve(layers.size());
      for (Linear* layer : layers) products.push_back(layer->product());
      out = kernels::linear_group(inputs.front(), products);
    } else {
      for (std::size_t i = 0; i < layers.size(); ++i) out.push_back(layers[i]->forward(inputs[i]));
    }
  }
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (!hooks[i]) continue;
    TensorView view;
    view.visit(out[i]);
    hooks[i]->post_forward(*layers[i], view);
  }
  return out;
}

std::vector<std::string> quantize_linears(Module& root,
                                          const std::function<bool(const std::string&)>& select) {
  std::vector<std::string> quantized;
  for (const NamedModule& m : root.named_modules()) {
    auto* linear = dynamic_cast<Linear*>(m.module);
    if (linear == nullptr || linear->is_quantized() ||
        linear->in_features() % kInt8GroupSize != 0 || !select(m.name)) {
      continue;
    }
    linear->quantize_int8();
    quantized.push_back(m.name.empty() ? "weight" : m.name + ".weight");
  }
  return quantized;
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
