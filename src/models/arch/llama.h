#pragma once
// The Llama family (model_type "llama", "mistral", "qwen2"): transformers' LlamaForCausalLM
// module tree, tensor for tensor — model.embed_tokens, model.layers.N.{self_attn.{q,k,v,o}_proj,
// mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, model.norm, lm_head.
// Grouped-query attention, rotary positions (rope_theta, linear and llama3 scaling), optional
// attention and MLP biases (qwen2: q/k/v biases), a head optionally tied to the embedding.
// Mistral's sliding window (config sliding_window) is applied in the attention mask. The decoder
// block's class is "<Family>DecoderLayer": LlamaDecoderLayer, MistralDecoderLayer,
// Qwen2DecoderLayer.

namespace ferry::models::detail {

// Registers llama, mistral and qwen2 (FERRY_ARCHITECTURE(llama) in architectures.def).
void register_llama();

}  // namespace ferry::models::detail
