#pragma once
// Feed-forward and norm blocks shared by the architectures (private to models): the gated MLP
// (separate gate/up projections or one fused gate_up_proj), Gemma's (1 + w) RMSNorm, and a
// holder for "some module called x -> y" so a decoder layer can be composed of any of them.

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>

#include "ferry/nn/activation.h"
#include "ferry/nn/linear.h"
#include "ferry/nn/module.h"

namespace ferry::models::detail {

// A module of the tree with the call that runs it (through its hook, Note [Hook entry point]).
struct Unary {
  std::shared_ptr<nn::Module> module;
  std::function<at::Tensor(const at::Tensor&)> call;
  at::Tensor operator()(const at::Tensor& x) const { return call(x); }
};

template <class M>
Unary unary(std::shared_ptr<M> module) {
  M* raw = module.get();  // the holder keeps it alive; no cycle through the lambda
  return {module, [raw](const at::Tensor& x) -> at::Tensor { return (*raw)(x); }};
}

struct GatedMlpOptions {
  std::string class_name;  // "LlamaMLP", ...
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::string activation = "silu";  // config.json's name (nn::activation_from_name)
  bool bias = false;
  bool fused_gate_up = false;  // one gate_up_proj [gate; up] (Phi-3)
  // Names of the projections (Mixtral's experts: w1, w3, w2) and of the activation module.
  std::string gate_name = "gate_proj";
  std::string up_name = "up_proj";
  std::string down_name = "down_proj";
  std::string act_name = "act_fn";
  at::ScalarType dtype = at::kFloat;
};

// down(act(gate(x)) * up(x)).
class GatedMlp : public nn::Callable<GatedMlp> {
 public:
  explicit GatedMlp(const GatedMlpOptions& options);

 private:
  friend class Callable<GatedMlp>;
  at::Tensor forward(const at::Tensor& x);

  std::int64_t intermediate_size_;
  std::shared_ptr<nn::Linear> gate_, up_, gate_up_, down_;
  std::shared_ptr<nn::Activation> act_;
};

// Gemma's RMSNorm: x / rms(x) * (1 + weight), computed in float32 and cast back at the end (the
// stored weight is the offset from 1, so a zero weight is the identity).
class OffsetRmsNorm : public nn::Callable<OffsetRmsNorm> {
 public:
  OffsetRmsNorm(std::string class_name, std::int64_t dim, double eps, at::ScalarType dtype);

 private:
  friend class Callable<OffsetRmsNorm>;
  at::Tensor forward(const at::Tensor& x);

  double eps_;
  nn::TensorRef weight_;
};

}  // namespace ferry::models::detail
