#include "models/blocks/rotary.h"

#include <numbers>

#include "ferry/kernels/fused.h"

namespace ferry::models::detail {

at::Tensor default_inverse_frequencies(double theta, std::int64_t dim) {
  const at::Tensor exponents = at::arange(0, dim, 2, at::kFloat) / static_cast<double>(dim);
  return 1.0 / at::pow(theta, exponents);
}

at::Tensor rope_inverse_frequencies(const ModelConfig& c) {
  const at::Tensor inv = default_inverse_frequencies(c.rope_theta, c.head_dim);
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") return inv / s.factor;
  if (s.type != "llama3") return inv;
  // transformers' _compute_llama3_parameters: long wavelengths scaled by 1/factor, short ones
  // kept, the band between interpolated smoothly.
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_len / s.low_freq_factor;
  const double high_wavelen = old_len / s.high_freq_factor;
  const at::Tensor wavelen = 2.0 * std::numbers::pi / inv;
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv / s.factor, inv);
  const at::Tensor smooth =
      (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  const at::Tensor smoothed = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
  const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return at::where(medium, smoothed, scaled);
}

at::Tensor longrope_inverse_frequencies(double theta, std::int64_t dim,
                                        const std::vector<double>& factors) {
  const at::Tensor f = at::tensor(factors, at::kDouble).to(at::kFloat);
  const at::Tensor exponents = at::arange(0, dim, 2, at::kFloat) / static_cast<double>(dim);
  return 1.0 / (f * at::pow(theta, exponents));
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inverse_frequencies,
                                               const at::Tensor& position_ids,
                                               double attention_factor) {
  const at::Tensor inv = inverse_frequencies.to(position_ids.device());
  const at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv;  // [B, T, D/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  if (attention_factor == 1.0) return {emb.cos(), emb.sin()};
  return {emb.cos() * attention_factor, emb.sin() * attention_factor};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // One pass for float32 on the CPU (Note [Fused layer steps]); the same rule below.
  if (kernels::rotate_half_applies(x, cos, sin)) return kernels::rotate_half(x, cos, sin);
  const std::int64_t dim = cos.size(-1);
  if (dim < x.size(-1)) {
    const at::Tensor rotated = apply_rope(x.narrow(-1, 0, dim), cos, sin);
    return at::cat({rotated, x.narrow(-1, dim, x.size(-1) - dim)}, -1);
  }
  const std::int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  const at::Tensor c = cos.unsqueeze(1).to(x.scalar_type());
  const at::Tensor s = sin.unsqueeze(1).to(x.scalar_type());
  return x * c + rotated * s;
}

}  // namespace ferry::models::detail
