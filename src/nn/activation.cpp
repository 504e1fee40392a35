#include "ferry/nn/activation.h"

#include <array>
#include <string>
#include <utility>

#include "ferry/core/error.h"

namespace ferry::nn {
namespace {
const char* class_name_of(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::kReLU: return "ReLU";
    case ActivationKind::kGELU: return "GELU";
    case ActivationKind::kGELUTanh: return "NewGELUActivation";
    case ActivationKind::kSiLU: return "SiLU";
    case ActivationKind::kTanh: return "Tanh";
    case ActivationKind::kSigmoid: return "Sigmoid";
    case ActivationKind::kIdentity: return "Identity";
  }
  return "Activation";
}
}  // namespace

Activation::Activation(ActivationKind kind) : Callable(class_name_of(kind)), kind_(kind) {}

at::Tensor Activation::forward(const at::Tensor& x) {
  switch (kind_) {
    case ActivationKind::kReLU: return at::relu(x);
    case ActivationKind::kGELU: return at::gelu(x);
    case ActivationKind::kGELUTanh: return at::gelu(x, "tanh");
    case ActivationKind::kSiLU: return at::silu(x);
    case ActivationKind::kTanh: return at::tanh(x);
    case ActivationKind::kSigmoid: return at::sigmoid(x);
    case ActivationKind::kIdentity: return x;
  }
  return x;
}

ActivationKind activation_from_name(std::string_view name) {
  static constexpr std::array<std::pair<std::string_view, ActivationKind>, 11> kNames{{
      {"relu", ActivationKind::kReLU},
      {"gelu", ActivationKind::kGELU},
      {"gelu_new", ActivationKind::kGELUTanh},
      {"gelu_pytorch_tanh", ActivationKind::kGELUTanh},
      {"gelu_fast", ActivationKind::kGELUTanh},
      {"silu", ActivationKind::kSiLU},
      {"swish", ActivationKind::kSiLU},
      {"tanh", ActivationKind::kTanh},
      {"sigmoid", ActivationKind::kSigmoid},
      {"linear", ActivationKind::kIdentity},
      {"identity", ActivationKind::kIdentity},
  }};
  for (const auto& [n, kind] : kNames) {
    if (n == name) return kind;
  }
  throw InvalidArgument(fmt::format("unknown activation '{}': expected relu, gelu, gelu_new, "
                                    "gelu_pytorch_tanh, gelu_fast, silu, swish, tanh, sigmoid, "
                                    "linear or identity",
                                    name),
                        ErrorFields{.expected = "an activation name", .actual = std::string(name)});
}

}  // namespace ferry::nn
