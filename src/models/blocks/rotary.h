#pragma once
// Rotary position embeddings (private to models): the inverse-frequency variants of
// transformers' rope initializers, cos/sin for positions, and the rotation itself.

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "ferry/models/config.h"

namespace ferry::models::detail {

// Inverse frequencies [dim / 2] (float32): 1 / theta^(2i / dim).
at::Tensor default_inverse_frequencies(double theta, std::int64_t dim);
// With the config's rope_theta over head_dim and its rope_scaling: none, "linear" or "llama3"
// (transformers' _compute_default / _compute_linear / _compute_llama3 parameters).
at::Tensor rope_inverse_frequencies(const ModelConfig& config);
// LongRoPE (Phi-3's "longrope", formerly "su"): each frequency divided by its own factor.
at::Tensor longrope_inverse_frequencies(double theta, std::int64_t dim,
                                        const std::vector<double>& factors);

// cos and sin [batch, tokens, dim] for `position_ids` [batch, tokens], both multiplied by
// `attention_factor` (1 but for LongRoPE / YaRN, which scale the attention this way).
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inverse_frequencies,
                                               const at::Tensor& position_ids,
                                               double attention_factor = 1.0);
// x [batch, heads, tokens, head_dim] rotated (the rotate_half convention of transformers) over
// its first cos.size(-1) features; the rest (partial rotary) pass unchanged.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace ferry::models::detail
