#include "attention.h"

#include <cmath>
#include <limits>
#include <numbers>

namespace ferry::models::detail {

at::Tensor causal_mask(const at::Tensor& attention_mask, std::int64_t tokens,
                       std::optional<std::int64_t> sliding_window) {
  const std::int64_t total = attention_mask.size(1);
  const std::int64_t past = total - tokens;
  const auto cpu = attention_mask.device();
  const at::Tensor query_pos =
      at::arange(past, total, at::TensorOptions().dtype(at::kLong).device(cpu));
  const at::Tensor key_pos = at::arange(total, at::TensorOptions().dtype(at::kLong).device(cpu));
  at::Tensor causal = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1);  // [T, S]
  if (sliding_window) {
    // transformers' Mistral masks keys at or before query - sliding_window.
    causal = causal.logical_and(key_pos.unsqueeze(0) > query_pos.unsqueeze(1) - *sliding_window);
  }
  const at::Tensor real = attention_mask.to(at::kBool).unsqueeze(1).unsqueeze(1);  // [B,1,1,S]
  const at::Tensor allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(real);   // [B,1,T,S]
  return at::zeros(allowed.sizes(), at::TensorOptions().dtype(at::kFloat).device(cpu))
      .masked_fill(allowed.logical_not(), std::numeric_limits<float>::lowest());
}

at::Tensor rope_inverse_frequencies(const ModelConfig& c) {
  const at::Tensor exponents =
      at::arange(0, c.head_dim, 2, at::kFloat) / static_cast<double>(c.head_dim);
  at::Tensor inv = 1.0 / at::pow(c.rope_theta, exponents);
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

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inverse_frequencies,
                                               const at::Tensor& position_ids) {
  const at::Tensor inv = inverse_frequencies.to(position_ids.device());
  const at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv;  // [B, T, D/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const std::int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  const at::Tensor c = cos.unsqueeze(1).to(x.scalar_type());
  const at::Tensor s = sin.unsqueeze(1).to(x.scalar_type());
  return x * c + rotated * s;
}

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask) {
  const std::int64_t heads = q.size(1);
  const std::int64_t groups = heads / k.size(1);
  at::Tensor keys = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  at::Tensor values = groups > 1 ? v.repeat_interleave(groups, 1) : v;
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(q, keys.transpose(-1, -2)).to(at::kFloat) * scale;
  scores = scores + mask.to(scores.device());
  const at::Tensor weights = at::softmax(scores, -1).to(q.scalar_type());
  const at::Tensor out = at::matmul(weights, values);  // [B, H, T, D]
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), heads * q.size(3)});
}

}  // namespace ferry::models::detail
