#pragma once
// Attention math shared by the architectures (private to models): the additive causal mask
// with left padding, rotary embeddings, and scaled dot-product attention with grouped heads.

#include <ATen/ATen.h>

#include <optional>

#include "ferry/models/config.h"

namespace ferry::models::detail {

// Additive mask [batch, 1, tokens, cached + tokens] in float32: 0 where query i (the last
// `tokens` positions) may see key j — j not after i, attention_mask[b, j] = 1, and with a
// sliding window, i - j < sliding_window — else the lowest float (finite, so a fully padded row
// gives uniform weights instead of NaN). i and j index the mask, padding included, as
// transformers' cache positions do.
at::Tensor causal_mask(const at::Tensor& attention_mask, std::int64_t tokens,
                       std::optional<std::int64_t> sliding_window = std::nullopt);

// Rotary inverse frequencies [head_dim / 2] (float32) with the config's rope_theta and
// rope_scaling (transformers' _compute_default / _compute_linear / _compute_llama3 parameters).
at::Tensor rope_inverse_frequencies(const ModelConfig& config);
// cos and sin [batch, tokens, head_dim] for `position_ids` [batch, tokens].
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inverse_frequencies,
                                               const at::Tensor& position_ids);
// x [batch, heads, tokens, head_dim] rotated (the rotate_half convention of transformers).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// softmax(q kᵀ / sqrt(head_dim) + mask) v with q [B, H, T, D], k and v [B, KV, S, D] (KV
// divides H: each key head serves H / KV query heads). Scores and softmax in float32. Returns
// [B, T, H * D] in q's dtype.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask);

}  // namespace ferry::models::detail
