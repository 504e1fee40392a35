#include "models/plain_reference.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <numbers>
#include <stdexcept>
#include <string>

#include "ferry/io/checkpoint.h"

namespace ferry::models::testing {
namespace {

using Json = nlohmann::json;
using Weights = std::map<std::string, at::Tensor>;

Weights read_weights(const std::filesystem::path& folder) {
  Weights w;
  const auto source = io::open_checkpoint(folder);
  for (const std::string& name : source->names())
    w[name] = source->load(name).to(at::kFloat).clone();
  return w;
}

const at::Tensor& get(const Weights& w, const std::string& name) {
  auto it = w.find(name);
  if (it == w.end()) throw std::runtime_error("plain reference: no tensor " + name);
  return it->second;
}

at::Tensor linear(const at::Tensor& x, const Weights& w, const std::string& name) {
  return at::matmul(x, get(w, name + ".weight").t());
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return weight * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

at::Tensor rotate_half(const at::Tensor& x) {
  const std::int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

// q or k [heads, T, D]: the first cos.size(-1) features rotated.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const std::int64_t r = cos.size(-1);
  const at::Tensor head = x.narrow(-1, 0, r);
  const at::Tensor rotated = head * cos + rotate_half(head) * sin;
  return r == x.size(-1) ? rotated : at::cat({rotated, x.narrow(-1, r, x.size(-1) - r)}, -1);
}

// Attention of one layer for T tokens: q [H, T, D], k and v [KV, T, D].
at::Tensor attention(at::Tensor q, at::Tensor k, at::Tensor v, double scale, std::int64_t window,
                     double softcap) {
  const std::int64_t H = q.size(0), KV = k.size(0), T = q.size(1);
  k = k.repeat_interleave(H / KV, 0);
  v = v.repeat_interleave(H / KV, 0);
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) * scale;
  if (softcap > 0) scores = at::tanh(scores / softcap) * softcap;
  at::Tensor mask = at::full({T, T}, -INFINITY).triu(1);
  if (window > 0) mask = mask + at::full({T, T}, -INFINITY).tril(-window);  // i - j >= window
  return at::matmul(at::softmax(scores + mask, -1), v).transpose(0, 1).reshape({T, -1});
}

double num(const Json& c, const char* key, double fallback) {
  return c.contains(key) && !c[key].is_null() ? c[key].get<double>() : fallback;
}
std::int64_t integer(const Json& c, const char* key, std::int64_t fallback) {
  return c.contains(key) && !c[key].is_null() ? c[key].get<std::int64_t>() : fallback;
}

at::Tensor swish(const at::Tensor& x) { return x * at::sigmoid(x); }
at::Tensor gelu_tanh(const at::Tensor& x) {
  return 0.5 * x * (1.0 + at::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x.pow(3))));
}

at::Tensor forward(const Json& c, const Weights& w, const std::vector<std::int64_t>& ids) {
  const std::string type = c["model_type"];
  const auto T = static_cast<std::int64_t>(ids.size());
  const std::int64_t hidden = c["hidden_size"], H = c["num_attention_heads"];
  const std::int64_t KV = integer(c, "num_key_value_heads", H);
  const std::int64_t D = integer(c, "head_dim", hidden / H);
  const std::int64_t I = c["intermediate_size"];
  const double eps = num(c, "rms_norm_eps", 1e-6);
  const double theta = num(c, "rope_theta", 10000.0);

  // Rotary: inverse frequencies over the rotary dimensions, cos/sin for positions 0..T-1.
  std::int64_t rotary = D;
  if (type == "phi3") rotary = static_cast<std::int64_t>(D * num(c, "partial_rotary_factor", 1.0));
  at::Tensor inv = 1.0 / at::pow(theta, at::arange(0, rotary, 2).to(at::kFloat) / rotary);
  double attention_factor = 1.0;
  if (type == "phi3" && c.contains("rope_scaling") && !c["rope_scaling"].is_null()) {
    const Json& s = c["rope_scaling"];
    const double original = num(c, "original_max_position_embeddings", 0);
    const double scale = num(c, "max_position_embeddings", 0) / original;
    attention_factor = scale <= 1 ? 1.0 : std::sqrt(1 + std::log(scale) / std::log(original));
    const bool beyond = static_cast<double>(T) > original;  // positions 0..T-1
    const std::vector<double> f = s[beyond ? "long_factor" : "short_factor"];
    inv = 1.0 / (at::tensor(f, at::kDouble).to(at::kFloat) *
                 at::pow(theta, at::arange(0, rotary, 2).to(at::kFloat) / rotary));
  }
  const at::Tensor freqs = at::arange(T).to(at::kFloat).unsqueeze(1) * inv.unsqueeze(0);
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  const at::Tensor cos = emb.cos() * attention_factor, sin = emb.sin() * attention_factor;

  const at::Tensor table = get(w, "model.embed_tokens.weight");
  at::Tensor x = table.index_select(0, at::tensor(ids, at::kLong));
  const bool gemma = type == "gemma2";
  if (gemma) x = x * std::sqrt(static_cast<double>(hidden));
  auto norm = [&](const at::Tensor& y, const std::string& name) {
    const at::Tensor weight = get(w, name + ".weight");
    return rms_norm(y, gemma ? 1.0 + weight : weight, eps);
  };
  for (std::int64_t i = 0; i < c["num_hidden_layers"].get<std::int64_t>(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    at::Tensor h = norm(x, p + "input_layernorm");
    at::Tensor q, k, v;
    if (type == "phi3") {
      const at::Tensor qkv = linear(h, w, p + "self_attn.qkv_proj");
      q = qkv.narrow(-1, 0, H * D);
      k = qkv.narrow(-1, H * D, KV * D);
      v = qkv.narrow(-1, H * D + KV * D, KV * D);
    } else {
      q = linear(h, w, p + "self_attn.q_proj");
      k = linear(h, w, p + "self_attn.k_proj");
      v = linear(h, w, p + "self_attn.v_proj");
    }
    q = rotate(q.reshape({T, H, D}).transpose(0, 1), cos, sin);
    k = rotate(k.reshape({T, KV, D}).transpose(0, 1), cos, sin);
    v = v.reshape({T, KV, D}).transpose(0, 1);
    double scale = 1.0 / std::sqrt(static_cast<double>(D));
    double softcap = 0;
    std::int64_t window = integer(c, "sliding_window", 0);
    if (gemma) {
      scale = 1.0 / std::sqrt(num(c, "query_pre_attn_scalar", 256));
      softcap = num(c, "attn_logit_softcapping", 0);
      if (i % 2 == 1) window = 0;  // odd layers attend globally
    }
    at::Tensor a = linear(attention(q, k, v, scale, window, softcap), w, p + "self_attn.o_proj");
    if (gemma) {
      x = x + norm(a, p + "post_attention_layernorm");
      h = norm(x, p + "pre_feedforward_layernorm");
      const at::Tensor m =
          linear(gelu_tanh(linear(h, w, p + "mlp.gate_proj")) * linear(h, w, p + "mlp.up_proj"), w,
                 p + "mlp.down_proj");
      x = x + norm(m, p + "post_feedforward_layernorm");
      continue;
    }
    x = x + a;
    h = norm(x, p + "post_attention_layernorm");
    if (type == "phi3") {
      const at::Tensor gu = linear(h, w, p + "mlp.gate_up_proj");
      x = x + linear(swish(gu.narrow(-1, 0, I)) * gu.narrow(-1, I, I), w, p + "mlp.down_proj");
    } else {  // mixtral: every token through its top-k experts, weights renormalised
      const std::int64_t E = integer(c, "num_local_experts", 8);
      const std::int64_t K = integer(c, "num_experts_per_tok", 2);
      const std::string moe = p + "block_sparse_moe.";
      const at::Tensor probs = at::softmax(linear(h, w, moe + "gate"), -1);  // [T, E]
      const auto [top, chosen] = probs.topk(K, -1);
      const at::Tensor weights = top / top.sum(-1, true);
      at::Tensor out = at::zeros_like(h);
      for (std::int64_t t = 0; t < T; ++t) {
        for (std::int64_t j = 0; j < K; ++j) {
          const std::string e =
              moe + "experts." + std::to_string(chosen[t][j].item<std::int64_t>());
          const at::Tensor row = h[t];
          const at::Tensor y =
              linear(swish(linear(row, w, e + ".w1")) * linear(row, w, e + ".w3"), w, e + ".w2");
          out[t] += weights[t][j] * y;
        }
      }
      x = x + out;
      (void)E;
    }
  }
  x = norm(x, "model.norm");
  const bool tied = c.contains("tie_word_embeddings") && c["tie_word_embeddings"].get<bool>();
  at::Tensor logits = at::matmul(x, (tied ? table : get(w, "lm_head.weight")).t());
  if (gemma) {
    const double cap = num(c, "final_logit_softcapping", 0);
    if (cap > 0) logits = at::tanh(logits / cap) * cap;
  }
  return logits;
}

Json read_config(const std::filesystem::path& folder) {
  std::ifstream in(folder / "config.json");
  return Json::parse(in);
}

}  // namespace

at::Tensor plain_logits(const std::filesystem::path& folder, const std::vector<std::int64_t>& ids) {
  at::NoGradGuard no_grad;
  return forward(read_config(folder), read_weights(folder), ids);
}

std::vector<std::int64_t> plain_greedy(const std::filesystem::path& folder,
                                       std::vector<std::int64_t> ids, std::int64_t n) {
  at::NoGradGuard no_grad;
  const Json c = read_config(folder);
  const Weights w = read_weights(folder);
  std::vector<std::int64_t> out;
  for (std::int64_t s = 0; s < n; ++s) {
    const std::int64_t next = forward(c, w, ids)[-1].argmax().item<std::int64_t>();
    out.push_back(next);
    ids.push_back(next);
  }
  return out;
}

}  // namespace ferry::models::testing
