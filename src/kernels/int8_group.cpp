#include "int8_group.h"

#include <algorithm>
#include <cmath>
#include <limits>

// Note [int8 activations]
// The int8 decode product (M ≤ kDecodeMaxRows rows of x) quantizes x too: each row, per group of
// 32 inputs, by the weights' rule (quantize_int8_group: scale_x = max |x| ÷ 127, round to nearest
// even), once per call in gemv(), shared by every instruction set. Then per group of 32
//   y[m, n] += scale_w(n, g) · scale_x(m, g) · Σ_{k ∈ g} w[n, k] · x_q[m, k]
// where the inner sum is exact in int32 (AVX2: maddubs + madd; portable: the same lanes in C++)
// and only the scaling and the sum over groups are float32. A per-channel weight uses the same
// 32-wide activation groups and multiplies the row's total by its one scale at the end. So every
// instruction set computes x_q · w_qᵀ exactly up to float32 summation order; reading int8 bytes
// straight into integer multiply-adds (32 weights per instruction) is what lets the product run
// at memory bandwidth instead of converting every weight to float (bench_kernels, Note [int8
// group size]).
//
// The price is the activation's rounding: with x̃ = x_q · scale_x and w̃ = w_q · scale_w,
//   y − y_f32 = Σ_k (w̃_k − w_k) x_k + Σ_k w̃_k (x̃_k − x_k),
//   |y − y_f32| ≤ Σ_k |x_k| scale_w(k) ÷ 2 + Σ_k |w̃_k| scale_x(k) ÷ 2,
// the weight's half step (as before) plus the activation's. For x ~ N(0, 1) the second term is
// of the order of the first (a 32-group of x has max ≈ 2.5 σ, a 32-group of weights about the
// same): bench_kernels' accuracy lines measure the total. Prefill-sized inputs (M > 16) go to
// BLAS on dequantized tiles with x in float32 and have only the weight's error; a row of x
// holding an infinity or NaN gives NaN outputs in the decode product.

namespace ferry::kernels::detail {

float int8_group_scale(const float* src, std::int64_t len) {
  float amax = 0.0f;
  bool nan = false;  // std::max skips NaN; an infinity shows in amax
  for (std::int64_t i = 0; i < len; ++i) {
    amax = std::max(amax, std::fabs(src[i]));
    nan |= std::isnan(src[i]);
  }
  const bool finite = !nan && amax <= std::numeric_limits<float>::max();
  return finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
}

void round_int8_group(const float* src, std::int64_t len, float scale, std::int8_t* dst) {
  if (!(scale > 0.0f)) {  // zero, underflowed, or NaN
    std::fill(dst, dst + len, std::int8_t{0});
    return;
  }
  // Multiplying by the inverse is faster than dividing (quantize() runs over whole models); a
  // subnormal scale's inverse overflows, and then the division is the rule.
  // Rounding to nearest even by adding and taking off 1.5 · 2^23: for |v| < 2^22 the sum's last
  // bit is v's units digit, rounded as the FPU rounds (to nearest even by default), so q equals
  // std::nearbyint(v). Here |v| ≤ 127 (plus a rounding), and the loop stays a plain arithmetic
  // loop the compiler vectorises: nearbyint is a libm call per element on the baseline target,
  // and x is quantized on the calling thread before every int8 product of a decode step.
  constexpr float kRound = 12582912.0f;  // 1.5 · 2^23
  auto round_all = [&](auto in_steps) {
    for (std::int64_t i = 0; i < len; ++i) {
      const float q = (in_steps(src[i]) + kRound) - kRound;
      dst[i] = static_cast<std::int8_t>(std::min(std::max(q, -127.0f), 127.0f));
    }
  };
  const float inverse = 1.0f / scale;
  if (std::isfinite(inverse)) {
    round_all([inverse](float v) { return v * inverse; });
  } else {
    round_all([scale](float v) { return v / scale; });
  }
}

float quantize_int8_group(const float* src, std::int64_t len, std::int8_t* dst) {
  const float scale = int8_group_scale(src, len);
  round_int8_group(src, len, scale, dst);
  return scale;
}

}  // namespace ferry::kernels::detail
