#pragma once
// Phi-3 (model_type "phi3"): transformers' Phi3ForCausalLM module tree — model.embed_tokens,
// model.layers.N.{self_attn.{qkv_proj, o_proj}, mlp.{gate_up_proj, down_proj}, input_layernorm,
// post_attention_layernorm}, model.norm, lm_head. The Llama decoder with fused projections (qkv
// is [q; k; v], gate_up is [gate; up]), partial rotary (partial_rotary_factor), an optional
// sliding window, and LongRoPE scaling (rope_scaling type "longrope", formerly "su"): per-frequency
// short_factor / long_factor, chosen by whether the step's positions pass
// original_max_position_embeddings, and cos/sin scaled by an attention factor. The decoder
// block's class is "Phi3DecoderLayer".

#include <cstdint>
#include <optional>
#include <vector>

#include "ferry/models/config.h"

namespace ferry::models::detail {

struct Phi3Fields final : ArchitectureFields {
  double partial_rotary_factor = 1.0;  // rotary over the first head_dim * this features
  // LongRoPE (empty factors: plain rotary).
  std::vector<double> short_factor;  // [rotary_dim / 2], positions within the original length
  std::vector<double> long_factor;   // [rotary_dim / 2], beyond it
  std::int64_t original_max_position_embeddings = 0;
  std::optional<double> attention_factor;  // nullopt: sqrt(1 + ln(scale) / ln(original))
};

void register_phi3();

}  // namespace ferry::models::detail
