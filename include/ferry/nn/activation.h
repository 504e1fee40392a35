#pragma once
// Activation functions as modules (no tensors), and the mapping from transformers'
// config.json `hidden_act` / `activation_function` names.

#include <string_view>

#include "ferry/nn/module.h"

namespace ferry::nn {

enum class ActivationKind { kReLU, kGELU, kGELUTanh, kSiLU, kTanh, kSigmoid, kIdentity };

class Activation : public Callable<Activation> {
 public:
  explicit Activation(ActivationKind kind);
  ActivationKind kind() const noexcept { return kind_; }

 private:
  friend class Callable<Activation>;
  at::Tensor forward(const at::Tensor& x);

  ActivationKind kind_;
};

// "relu", "gelu", "gelu_new" / "gelu_pytorch_tanh" / "gelu_fast" (tanh approximation), "silu" /
// "swish", "tanh", "sigmoid", "linear" / "identity"; InvalidArgument otherwise.
ActivationKind activation_from_name(std::string_view name);

}  // namespace ferry::nn
