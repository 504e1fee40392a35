#pragma once
// Gemma 2 (model_type "gemma2"): transformers' Gemma2ForCausalLM module tree — model.embed_tokens,
// model.layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, input_layernorm,
// post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm}, model.norm,
// lm_head tied to the embedding. Embeddings scaled by sqrt(hidden_size); (1 + w) RMSNorms before
// and after both attention and MLP; attention scaled by query_pre_attn_scalar^-1/2 with its
// logits soft-capped (attn_logit_softcapping), the final logits too (final_logit_softcapping);
// even layers attend within sliding_window, odd layers globally; a gelu-tanh gated MLP. The
// decoder block's class is "Gemma2DecoderLayer".

#include <optional>

#include "ferry/models/config.h"

namespace ferry::models::detail {

struct Gemma2Fields final : ArchitectureFields {
  double query_pre_attn_scalar = 256;             // q kᵀ is scaled by this^-1/2
  std::optional<double> attn_logit_softcapping;   // nullopt: no capping
  std::optional<double> final_logit_softcapping;  // nullopt: no capping
};

void register_gemma2();

}  // namespace ferry::models::detail
