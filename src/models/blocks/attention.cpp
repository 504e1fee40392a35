#include "models/blocks/attention.h"

#include <array>
#include <cmath>
#include <limits>

#include "ferry/kernels/fused.h"
#include "models/blocks/rotary.h"

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

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask, const AttendOptions& options) {
  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  // One pass for float32 on the CPU (Note [Fused layer steps]); the same formula below.
  if (kernels::attend_applies(q, k, v, mask)) {
    return kernels::attend(q, k, v, mask, scale, options.softcap);
  }
  const std::int64_t heads = q.size(1);
  const std::int64_t groups = heads / k.size(1);
  at::Tensor keys = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  at::Tensor values = groups > 1 ? v.repeat_interleave(groups, 1) : v;
  at::Tensor scores = at::matmul(q, keys.transpose(-1, -2)).to(at::kFloat) * scale;
  if (options.softcap) scores = at::tanh(scores / *options.softcap) * *options.softcap;
  scores = scores + mask.to(scores.device());
  const at::Tensor weights = at::softmax(scores, -1).to(q.scalar_type());
  const at::Tensor out = at::matmul(weights, values);  // [B, H, T, D]
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), heads * q.size(3)});
}

SelfAttention::SelfAttention(const SelfAttentionOptions& o) : Callable(o.class_name), options_(o) {
  auto linear = [&](const char* name, std::int64_t in, std::int64_t out, bool bias) {
    return register_module(name, std::make_shared<nn::Linear>(
                                     in, out, nn::LinearOptions{.bias = bias, .dtype = o.dtype}));
  };
  const std::int64_t q_size = o.n_heads * o.head_dim;
  const std::int64_t kv_size = o.n_kv_heads * o.head_dim;
  if (o.fused_qkv) {
    qkv_proj_ = linear("qkv_proj", o.hidden_size, q_size + 2 * kv_size, o.qkv_bias);
  } else {
    q_proj_ = linear("q_proj", o.hidden_size, q_size, o.qkv_bias);
    k_proj_ = linear("k_proj", o.hidden_size, kv_size, o.qkv_bias);
    v_proj_ = linear("v_proj", o.hidden_size, kv_size, o.qkv_bias);
  }
  o_proj_ = linear("o_proj", q_size, o.hidden_size, o.o_bias);
}

at::Tensor SelfAttention::forward(const at::Tensor& x, LayerContext ctx, LayerCache* cache) {
  const std::int64_t b = x.size(0);
  const std::int64_t t = x.size(1);
  const SelfAttentionOptions& o = options_;
  auto heads = [&](const at::Tensor& y, std::int64_t n) {
    return y.reshape({b, t, n, o.head_dim}).transpose(1, 2);
  };
  at::Tensor q, k, v;
  if (qkv_proj_) {
    const at::Tensor qkv = (*qkv_proj_)(x);
    const std::int64_t q_size = o.n_heads * o.head_dim;
    const std::int64_t kv_size = o.n_kv_heads * o.head_dim;
    q = qkv.narrow(-1, 0, q_size);
    k = qkv.narrow(-1, q_size, kv_size);
    v = qkv.narrow(-1, q_size + kv_size, kv_size);
  } else {
    // One pass for the three products at decode sizes (Note [Grouped calls]).
    const std::array<nn::Linear*, 3> projections{q_proj_.get(), k_proj_.get(), v_proj_.get()};
    std::vector<at::Tensor> qkv = nn::Linear::call_group(projections, x);
    q = std::move(qkv[0]);
    k = std::move(qkv[1]);
    v = std::move(qkv[2]);
  }
  q = apply_rope(heads(q, o.n_heads), ctx.cos, ctx.sin);
  k = apply_rope(heads(k, o.n_kv_heads), ctx.cos, ctx.sin);
  const auto [keys, values] = cache->append(k, heads(v, o.n_kv_heads));
  const at::Tensor& mask = o.sliding ? ctx.sliding_mask : ctx.mask;
  return (*o_proj_)(attend(q, keys, values, mask, o.attend));
}

}  // namespace ferry::models::detail
