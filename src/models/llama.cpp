// The Llama family, read top to bottom: attention, MLP, decoder layer, model, head.
#include "ferry/models/llama.h"

#include "attention.h"
#include "ferry/nn/activation.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/embedding.h"
#include "ferry/nn/linear.h"
#include "ferry/nn/norm.h"

namespace ferry::models {
namespace {

std::string family_prefix(const std::string& model_type) {
  if (model_type == "mistral") return "Mistral";
  if (model_type == "qwen2") return "Qwen2";
  return "Llama";
}

// The per-token tensors every layer receives: rotary cos/sin and the additive mask. A struct
// the hooks can see, so each layer's hook moves them to the layer's execution device.
struct LayerContext {
  at::Tensor cos;
  at::Tensor sin;
  at::Tensor mask;
  void visit_tensors(nn::TensorView& view) {
    view.visit(cos, "cos");
    view.visit(sin, "sin");
    view.visit(mask, "mask");
  }
};

class Attention : public nn::Callable<Attention> {
 public:
  Attention(const ModelConfig& c, at::ScalarType dtype)
      : Callable(family_prefix(c.model_type) + "Attention"),
        n_heads_(c.n_heads),
        n_kv_heads_(c.n_kv_heads),
        head_dim_(c.head_dim) {
    // qwen2: biases on q, k, v but not o (attention_bias is forced true while parsing).
    const bool o_bias = c.model_type == "qwen2" ? false : c.attention_bias;
    auto linear = [&](const char* name, std::int64_t in, std::int64_t out, bool bias) {
      return register_module(name, std::make_shared<nn::Linear>(
                                       in, out, nn::LinearOptions{.bias = bias, .dtype = dtype}));
    };
    q_proj_ = linear("q_proj", c.hidden_size, c.n_heads * c.head_dim, c.attention_bias);
    k_proj_ = linear("k_proj", c.hidden_size, c.n_kv_heads * c.head_dim, c.attention_bias);
    v_proj_ = linear("v_proj", c.hidden_size, c.n_kv_heads * c.head_dim, c.attention_bias);
    o_proj_ = linear("o_proj", c.n_heads * c.head_dim, c.hidden_size, o_bias);
  }

 private:
  friend class Callable<Attention>;
  at::Tensor forward(const at::Tensor& x, LayerContext ctx, LayerCache* cache) {
    const std::int64_t b = x.size(0);
    const std::int64_t t = x.size(1);
    auto heads = [&](const at::Tensor& y, std::int64_t n) {
      return y.view({b, t, n, head_dim_}).transpose(1, 2);
    };
    const at::Tensor q = detail::apply_rope(heads((*q_proj_)(x), n_heads_), ctx.cos, ctx.sin);
    const at::Tensor k = detail::apply_rope(heads((*k_proj_)(x), n_kv_heads_), ctx.cos, ctx.sin);
    const at::Tensor v = heads((*v_proj_)(x), n_kv_heads_);
    const auto [keys, values] = cache->append(k, v);
    return (*o_proj_)(detail::attend(q, keys, values, ctx.mask));
  }

  std::int64_t n_heads_;
  std::int64_t n_kv_heads_;
  std::int64_t head_dim_;
  std::shared_ptr<nn::Linear> q_proj_, k_proj_, v_proj_, o_proj_;
};

class Mlp : public nn::Callable<Mlp> {
 public:
  Mlp(const ModelConfig& c, at::ScalarType dtype) : Callable(family_prefix(c.model_type) + "MLP") {
    const nn::LinearOptions o{.bias = c.mlp_bias, .dtype = dtype};
    gate_proj_ = register_module(
        "gate_proj", std::make_shared<nn::Linear>(c.hidden_size, c.intermediate_size, o));
    up_proj_ = register_module("up_proj",
                               std::make_shared<nn::Linear>(c.hidden_size, c.intermediate_size, o));
    down_proj_ = register_module(
        "down_proj", std::make_shared<nn::Linear>(c.intermediate_size, c.hidden_size, o));
    act_fn_ = register_module(
        "act_fn", std::make_shared<nn::Activation>(nn::activation_from_name(c.hidden_act)));
  }

 private:
  friend class Callable<Mlp>;
  at::Tensor forward(const at::Tensor& x) {
    return (*down_proj_)((*act_fn_)((*gate_proj_)(x)) * (*up_proj_)(x));
  }
  std::shared_ptr<nn::Linear> gate_proj_, up_proj_, down_proj_;
  std::shared_ptr<nn::Activation> act_fn_;
};

class DecoderLayer : public nn::Callable<DecoderLayer> {
 public:
  DecoderLayer(const ModelConfig& c, at::ScalarType dtype)
      : Callable(family_prefix(c.model_type) + "DecoderLayer") {
    self_attn_ = register_module("self_attn", std::make_shared<Attention>(c, dtype));
    mlp_ = register_module("mlp", std::make_shared<Mlp>(c, dtype));
    input_layernorm_ = register_module(
        "input_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, dtype));
    post_attention_layernorm_ =
        register_module("post_attention_layernorm",
                        std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, dtype));
  }

 private:
  friend class Callable<DecoderLayer>;
  // The cache is a pointer (hooks do not see it); LayerCache::append keeps it where this
  // layer's inputs arrive, i.e. on its execution device.
  at::Tensor forward(const at::Tensor& x, LayerContext ctx, LayerCache* cache) {
    const at::Tensor h = x + (*self_attn_)((*input_layernorm_)(x), ctx, cache);
    return h + (*mlp_)((*post_attention_layernorm_)(h));
  }
  std::shared_ptr<Attention> self_attn_;
  std::shared_ptr<Mlp> mlp_;
  std::shared_ptr<nn::RMSNorm> input_layernorm_, post_attention_layernorm_;
};

// transformers' LlamaModel: embeddings, layers, final norm → hidden states.
class Backbone : public nn::Callable<Backbone> {
 public:
  Backbone(const ModelConfig& c, at::ScalarType dtype)
      : Callable(family_prefix(c.model_type) + "Model"),
        inverse_frequencies_(detail::rope_inverse_frequencies(c)),
        sliding_window_(c.sliding_window) {
    embed_tokens = register_module(
        "embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, dtype));
    auto list = register_module("layers", std::make_shared<nn::ModuleList>());
    for (std::int64_t i = 0; i < c.n_layers; ++i) {
      layers_.push_back(list->push_back(std::make_shared<DecoderLayer>(c, dtype)));
    }
    norm_ =
        register_module("norm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, dtype));
  }
  std::shared_ptr<nn::Embedding> embed_tokens;

 private:
  friend class Callable<Backbone>;
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& attention_mask, KvCache* cache) {
    at::Tensor h = (*embed_tokens)(ids);
    auto [cos, sin] = detail::rope_cos_sin(inverse_frequencies_, positions);
    const LayerContext ctx{
        .cos = cos,
        .sin = sin,
        .mask = detail::causal_mask(attention_mask, ids.size(1), sliding_window_)};
    for (std::size_t i = 0; i < layers_.size(); ++i) h = (*layers_[i])(h, ctx, &cache->layer(i));
    return (*norm_)(h);
  }
  at::Tensor inverse_frequencies_;  // computed, never loaded (transformers' inv_freq buffer)
  // The cache keeps every position (no rolling buffer); the mask alone applies the window.
  std::optional<std::int64_t> sliding_window_;
  std::vector<std::shared_ptr<DecoderLayer>> layers_;
  std::shared_ptr<nn::RMSNorm> norm_;
};

class LlamaForCausalLM final : public nn::Callable<LlamaForCausalLM>, public CausalLM {
 public:
  LlamaForCausalLM(const ModelConfig& c, at::ScalarType dtype)
      : Callable(family_prefix(c.model_type) + "ForCausalLM"), config_(c) {
    model_ = register_module("model", std::make_shared<Backbone>(c, dtype));
    lm_head_ = register_module(
        "lm_head", std::make_shared<nn::Linear>(c.hidden_size, c.vocab_size,
                                                nn::LinearOptions{.bias = false, .dtype = dtype}));
    if (c.tie_word_embeddings) lm_head_->set_slot("weight", model_->embed_tokens->weight_slot());
  }
  nn::Module& module() override { return *this; }
  const ModelConfig& config() const override { return config_; }
  std::string decoder_layer_class() const override {
    return family_prefix(config_.model_type) + "DecoderLayer";
  }
  at::Tensor step(const StepInput& in, KvCache& cache) override {
    return (*this)(in.input_ids, in.position_ids, in.attention_mask, &cache)
        .to(at::kCPU)
        .to(at::kFloat);
  }

 private:
  friend class Callable<LlamaForCausalLM>;
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& attention_mask, KvCache* cache) {
    return (*lm_head_)((*model_)(ids, positions, attention_mask, cache));
  }
  ModelConfig config_;
  std::shared_ptr<Backbone> model_;
  std::shared_ptr<nn::Linear> lm_head_;
};

}  // namespace

std::shared_ptr<CausalLM> make_llama(const ModelConfig& config, at::ScalarType dtype) {
  return std::make_shared<LlamaForCausalLM>(config, dtype);
}

CheckpointLayout llama_checkpoint_layout() {
  return {.embedding = "model.embed_tokens.weight",
          .layers_prefix = "model.layers.",
          .n_layers_field = "num_hidden_layers",
          .hidden_size_field = "hidden_size",
          .ignored_keys = {R"(model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq)"}};
}

}  // namespace ferry::models
