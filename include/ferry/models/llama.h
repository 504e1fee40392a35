#pragma once
// The Llama family (model_type "llama", "mistral", "qwen2"): transformers' LlamaForCausalLM
// module tree, tensor for tensor — model.embed_tokens, model.layers.N.{self_attn.{q,k,v,o}_proj,
// mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, model.norm, lm_head.
// Grouped-query attention, rotary positions (rope_theta, linear and llama3 scaling), optional
// attention and MLP biases (qwen2: q/k/v biases), a head optionally tied to the embedding.
// Mistral's sliding window (config sliding_window) is applied in the attention mask.

#include <memory>

#include "ferry/models/causal_lm.h"
#include "ferry/models/checkpoint_layout.h"

namespace ferry::models {

// Builds the model for `config` with parameters of `dtype`, on the device of the current
// nn::InitOnDevice guard (meta under InitEmptyWeights). The decoder block's class is
// "<Family>DecoderLayer": LlamaDecoderLayer, MistralDecoderLayer, Qwen2DecoderLayer.
std::shared_ptr<CausalLM> make_llama(const ModelConfig& config, at::ScalarType dtype);
// The Llama family's checkpoint names; older transformers saved each layer's rotary
// inv_freq buffer, which is recomputed here and dropped.
CheckpointLayout llama_checkpoint_layout();

}  // namespace ferry::models
