#pragma once
// Weight-only int8 quantization for the linear layers: int8 values with float16 or float32 scales,
// symmetric (no zero point), and a fused kernel that dequantizes as it reads. See Note [int8 group
// size] in src/kernels/quantized.cpp for which scheme to pick.

#include <ATen/ATen.h>

#include <optional>
#include <string_view>

namespace ferry::kernels {

enum class QuantScheme {
  kGroup32,     // one scale per 32 consecutive inputs of a row (the last group may be shorter);
                // recommended (Note [int8 group size])
  kPerChannel,  // one scale per output row
};

// A weight [out, in] stored as values × scales. Plain tensors, so either can live in ferry's
// tensor slots or the offload folder like any weight.
struct QuantizedWeight {
  at::Tensor values;  // int8 [out, in], in [-127, 127]
  at::Tensor scales;  // float16 or float32 [out, groups]: groups = ceil(in / 32) (kGroup32) or 1
  QuantScheme scheme = QuantScheme::kGroup32;

  std::int64_t out_features() const { return values.size(0); }
  std::int64_t in_features() const { return values.size(1); }
  // Inputs per scale: 32, or in_features() for kPerChannel.
  std::int64_t group_size() const;
  // The float32 weight these values and scales stand for (tests, fallbacks).
  at::Tensor dequantize() const;
};

// Quantizes w [out, in] (float32, bfloat16 or float16, CPU): scale = max |w| over the group ÷ 127,
// value = round(w ÷ scale). Scales in float16 (the default, Note [int8 scales in float16] in
// src/kernels/quantized.cpp) or float32. Throws ShapeMismatch / DTypeMismatch naming the dtype,
// and InvalidArgument naming the row when a float16 scale cannot hold a group (|w| > 127 × 65504).
QuantizedWeight quantize(const at::Tensor& w, QuantScheme scheme,
                         at::ScalarType scale_dtype = at::kHalf);

// y = x · dequantize(w)ᵀ (+ bias) without materialising the float32 weight: x [..., in] in float32,
// bfloat16 or float16; bias [out] or none; y in x's dtype. Throws like linear(x, w, bias, what).
at::Tensor linear(const at::Tensor& x, const QuantizedWeight& w,
                  const std::optional<at::Tensor>& bias, std::string_view what = "linear");

}  // namespace ferry::kernels
