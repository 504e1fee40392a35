#pragma once
// Attention shared by the architectures (private to models): the additive causal mask with left
// padding and an optional sliding window, scaled dot-product attention with grouped heads and
// optional logit soft-capping, and the rotary self-attention module of the Llama-like families
// (separate q/k/v projections or one fused qkv_proj).

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "ferry/models/kv_cache.h"
#include "ferry/nn/linear.h"
#include "ferry/nn/module.h"

namespace ferry::models::detail {

// Additive mask [batch, 1, tokens, cached + tokens] in float32: 0 where query i (the last
// `tokens` positions) may see key j — j not after i, attention_mask[b, j] = 1, and with a
// sliding window, i - j < sliding_window — else the lowest float (finite, so a fully padded row
// gives uniform weights instead of NaN). i and j index the mask, padding included, as
// transformers' cache positions do.
at::Tensor causal_mask(const at::Tensor& attention_mask, std::int64_t tokens,
                       std::optional<std::int64_t> sliding_window = std::nullopt);

struct AttendOptions {
  std::optional<double> scale;    // multiplies q kᵀ; nullopt: 1 / sqrt(head_dim)
  std::optional<double> softcap;  // scores become softcap * tanh(scores / softcap) (Gemma 2)
};

// softmax(q kᵀ * scale + mask) v with q [B, H, T, D], k and v [B, KV, S, D] (KV divides H: each
// key head serves H / KV query heads). Scores and softmax in float32. Returns [B, T, H * D] in
// q's dtype.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask, const AttendOptions& options = {});

// The per-step tensors every decoder layer receives: rotary cos/sin and the additive masks. A
// struct the hooks can see, so each layer's hook moves them to the layer's execution device.
struct LayerContext {
  at::Tensor cos;
  at::Tensor sin;
  at::Tensor mask;          // causal (global attention)
  at::Tensor sliding_mask;  // causal within the sliding window; `mask` when there is none
  void visit_tensors(nn::TensorView& view) {
    view.visit(cos, "cos");
    view.visit(sin, "sin");
    view.visit(mask, "mask");
    view.visit(sliding_mask, "sliding_mask");
  }
};

struct SelfAttentionOptions {
  std::string class_name;  // "LlamaAttention", ...
  std::int64_t hidden_size = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_kv_heads = 0;
  std::int64_t head_dim = 0;
  bool qkv_bias = false;
  bool o_bias = false;
  bool fused_qkv = false;  // one qkv_proj [q; k; v] (Phi-3) instead of q_proj, k_proj, v_proj
  bool sliding = false;    // attends through LayerContext::sliding_mask
  AttendOptions attend;
  at::ScalarType dtype = at::kFloat;
};

// Rotary self-attention with grouped key/value heads, appending to the layer's KV cache.
class SelfAttention : public nn::Callable<SelfAttention> {
 public:
  explicit SelfAttention(const SelfAttentionOptions& options);

 private:
  friend class Callable<SelfAttention>;
  at::Tensor forward(const at::Tensor& x, LayerContext ctx, LayerCache* cache);

  SelfAttentionOptions options_;
  std::shared_ptr<nn::Linear> q_proj_, k_proj_, v_proj_, qkv_proj_, o_proj_;
};

}  // namespace ferry::models::detail
