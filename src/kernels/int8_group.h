#pragma once
// Private to the kernels layer: the one rounding rule of symmetric int8, shared by the weights
// (quantize()) and by the activations of the int8 decode product (Note [int8 activations]).

#include <cstdint>

namespace ferry::kernels::detail {

// Elements per scale of group-wise int8, for weights and activations alike.
constexpr std::int64_t kInt8Group = 32;

// Writes round(src[i] ÷ scale) clamped to [-127, 127] to dst[0, len) and returns scale =
// max |src| ÷ 127. An all-zero group (or one so small that the scale underflows to 0) gives scale
// 0 and zeros; a group holding an infinity or NaN gives scale NaN and zeros, so whatever it
// multiplies becomes NaN.
float quantize_int8_group(const float* src, std::int64_t len, std::int8_t* dst);

// quantize_int8_group in its two steps: the group's scale (max |src| ÷ 127, NaN when it holds an
// infinity or NaN), and the values for a given scale (zeros unless scale > 0).
float int8_group_scale(const float* src, std::int64_t len);
void round_int8_group(const float* src, std::int64_t len, float scale, std::int8_t* dst);

}  // namespace ferry::kernels::detail
