// GPT-2, read top to bottom: config, attention, MLP, block, model, registration.
#include "models/arch/gpt2.h"

#include "ferry/nn/containers.h"
#include "ferry/nn/norm.h"
#include "models/architecture.h"
#include "models/blocks/decoder.h"

namespace ferry::models::detail {
namespace {

// transformers' GPT2Config.
void read_config(const Reader& r, ModelConfig& c) {
  c.vocab_size = r.size("vocab_size", kMaxVocabSize);
  c.hidden_size = r.size("n_embd", kMaxDimension);
  c.n_layers = r.size("n_layer", kMaxDimension);
  c.n_heads = r.size("n_head", kMaxDimension);
  c.n_kv_heads = c.n_heads;
  c.max_position_embeddings = r.size("n_positions", kMaxPositions);
  c.intermediate_size = r.size("n_inner", kMaxDimension, 4 * c.hidden_size);
  c.norm_eps = r.positive_number("layer_norm_epsilon", 1e-5);
  c.hidden_act = r.string("activation_function", "gelu_new");
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  c.mlp_bias = true;
  if (c.hidden_size % c.n_heads != 0) {
    r.fail("n_head", fmt::format("({}) must divide n_embd ({})", c.n_heads, c.hidden_size));
  }
  c.head_dim = c.hidden_size / c.n_heads;
}

void write_config(const ModelConfig& c, Json& j) {
  j["architectures"] = {"GPT2LMHeadModel"};
  j["n_embd"] = c.hidden_size;
  j["n_layer"] = c.n_layers;
  j["n_head"] = c.n_heads;
  j["n_positions"] = c.max_position_embeddings;
  j["n_inner"] = c.intermediate_size;
  j["layer_norm_epsilon"] = c.norm_eps;
  j["activation_function"] = c.hidden_act;
}

// Learned positions add a table to the decoder's bound.
double parameter_bound(const ModelConfig& c) {
  return decoder_parameter_bound(c) +
         static_cast<double>(c.max_position_embeddings) * static_cast<double>(c.hidden_size);
}

class Attention : public nn::Callable<Attention> {
 public:
  Attention(const ModelConfig& c, at::ScalarType dtype)
      : Callable("GPT2Attention"), n_heads_(c.n_heads), head_dim_(c.head_dim) {
    c_attn_ = register_module(
        "c_attn", std::make_shared<nn::Conv1D>(3 * c.hidden_size, c.hidden_size, dtype));
    c_proj_ = register_module("c_proj",
                              std::make_shared<nn::Conv1D>(c.hidden_size, c.hidden_size, dtype));
  }

 private:
  friend class Callable<Attention>;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, LayerCache* cache) {
    const std::int64_t b = x.size(0);
    const std::int64_t t = x.size(1);
    const auto qkv = (*c_attn_)(x).split(n_heads_ * head_dim_, -1);
    auto heads = [&](const at::Tensor& y) {
      return y.view({b, t, n_heads_, head_dim_}).transpose(1, 2);
    };
    const auto [keys, values] = cache->append(heads(qkv[1]), heads(qkv[2]));
    return (*c_proj_)(attend(heads(qkv[0]), keys, values, mask));
  }
  std::int64_t n_heads_;
  std::int64_t head_dim_;
  std::shared_ptr<nn::Conv1D> c_attn_, c_proj_;
};

class Mlp : public nn::Callable<Mlp> {
 public:
  Mlp(const ModelConfig& c, at::ScalarType dtype) : Callable("GPT2MLP") {
    c_fc_ = register_module(
        "c_fc", std::make_shared<nn::Conv1D>(c.intermediate_size, c.hidden_size, dtype));
    c_proj_ = register_module(
        "c_proj", std::make_shared<nn::Conv1D>(c.hidden_size, c.intermediate_size, dtype));
    act_ = register_module(
        "act", std::make_shared<nn::Activation>(nn::activation_from_name(c.hidden_act)));
  }

 private:
  friend class Callable<Mlp>;
  at::Tensor forward(const at::Tensor& x) { return (*c_proj_)((*act_)((*c_fc_)(x))); }
  std::shared_ptr<nn::Conv1D> c_fc_, c_proj_;
  std::shared_ptr<nn::Activation> act_;
};

class Block : public nn::Callable<Block> {
 public:
  Block(const ModelConfig& c, at::ScalarType dtype) : Callable("GPT2Block") {
    const nn::LayerNormOptions norm{.eps = c.norm_eps, .dtype = dtype};
    ln_1_ = register_module("ln_1", std::make_shared<nn::LayerNorm>(c.hidden_size, norm));
    attn_ = register_module("attn", std::make_shared<Attention>(c, dtype));
    ln_2_ = register_module("ln_2", std::make_shared<nn::LayerNorm>(c.hidden_size, norm));
    mlp_ = register_module("mlp", std::make_shared<Mlp>(c, dtype));
  }

 private:
  friend class Callable<Block>;
  // The cache stays where this block's inputs arrive (see LayerCache::append).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, LayerCache* cache) {
    const at::Tensor h = x + (*attn_)((*ln_1_)(x), mask, cache);
    return h + (*mlp_)((*ln_2_)(h));
  }
  std::shared_ptr<nn::LayerNorm> ln_1_, ln_2_;
  std::shared_ptr<Attention> attn_;
  std::shared_ptr<Mlp> mlp_;
};

// transformers' GPT2Model: token and position embeddings, blocks, final norm.
class Gpt2Model : public nn::Callable<Gpt2Model>, public StagedBackbone {
 public:
  Gpt2Model(const ModelConfig& c, const ModelDTypes& dtypes) : Callable("GPT2Model") {
    const at::ScalarType dtype = dtypes.weights;
    wte = register_module("wte", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size,
                                                                 dtype, dtypes.compute));
    wpe_ = register_module("wpe", std::make_shared<nn::Embedding>(c.max_position_embeddings,
                                                                  c.hidden_size, dtype,
                                                                  dtypes.compute));
    auto list = register_module("h", std::make_shared<nn::ModuleList>());
    for (std::int64_t i = 0; i < c.n_layers; ++i) {
      blocks_.push_back(list->push_back(std::make_shared<Block>(c, dtype)));
    }
    ln_f_ = register_module(
        "ln_f", std::make_shared<nn::LayerNorm>(
                    c.hidden_size, nn::LayerNormOptions{.eps = c.norm_eps, .dtype = dtype}));
  }
  std::shared_ptr<nn::Embedding> wte;

  at::Tensor embed(const at::Tensor& ids, const at::Tensor& positions) override {
    const at::Tensor token = (*wte)(ids);
    return token + (*wpe_)(positions).to(token.device());
  }
  at::Tensor layers(at::Tensor h, const at::Tensor& positions, const at::Tensor& attention_mask,
                    KvCache& cache, std::int64_t begin, std::int64_t end) override {
    if (begin >= end) return h;
    const at::Tensor mask = causal_mask(attention_mask, positions.size(1));
    for (std::int64_t i = begin; i < end; ++i) {
      const auto l = static_cast<std::size_t>(i);
      h = (*blocks_[l])(h, mask, &cache.layer(l));
    }
    return h;
  }
  at::Tensor norm(const at::Tensor& h) override { return (*ln_f_)(h); }
  std::vector<std::string> embedding_names() const override { return {"wte", "wpe"}; }
  std::string layers_name() const override { return "h"; }
  std::string norm_name() const override { return "ln_f"; }
  std::int64_t n_layers() const override { return static_cast<std::int64_t>(blocks_.size()); }

 private:
  friend class Callable<Gpt2Model>;
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& attention_mask, KvCache* cache) {
    return norm(layers(embed(ids, positions), positions, attention_mask, *cache, 0, n_layers()));
  }
  std::shared_ptr<nn::Embedding> wpe_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<nn::LayerNorm> ln_f_;
};

std::shared_ptr<CausalLM> build(const ModelConfig& c, const ModelDTypes& dtypes,
                                const Naming& naming) {
  const at::ScalarType dtype = dtypes.weights;
  auto backbone = std::make_shared<Gpt2Model>(c, dtypes);
  return std::make_shared<CausalLMTail>(c, dtype,
                                        TailSpec{.class_name = "GPT2LMHeadModel",
                                                 .decoder_layer_class = "GPT2Block",
                                                 .base_name = "transformer",
                                                 .naming = naming,
                                                 .backbone = backbone,
                                                 .call_backbone = backbone_call(backbone),
                                                 .stages = backbone.get(),
                                                 .tied_embedding = backbone->wte->weight_slot()});
}

void configure(const MakeModelOptions& o, ModelConfig& c) {
  c.intermediate_size = o.intermediate_size ? o.intermediate_size : 4 * o.hidden_size;
  c.max_position_embeddings = o.max_position_embeddings ? o.max_position_embeddings : 1024;
  c.n_kv_heads = c.n_heads;
  c.norm_eps = 1e-5;
  c.hidden_act = "gelu_new";
  c.tie_word_embeddings = c.attention_bias = c.mlp_bias = true;
}

}  // namespace

void register_gpt2() {
  add_architecture({.model_type = "gpt2",
                    .read_config = read_config,
                    .write_config = write_config,
                    .parameter_bound = parameter_bound,
                    .build = build,
                    // transformers saved the causal-mask buffers attn.bias and attn.masked_bias;
                    // they are rebuilt here and dropped (with or without the prefix).
                    .layout = {.embedding = "transformer.wte.weight",
                               .layers_prefix = "transformer.h.",
                               .n_layers_field = "n_layer",
                               .hidden_size_field = "n_embd",
                               .positions_field = "n_positions",
                               .base_model_prefix = "transformer.",
                               .ignored_keys = {R"((transformer\.)?h\.\d+\.attn\.(masked_)?bias)"}},
                    .make = MakeRecipe{.layer_elements_per_hidden2 = 12.0,
                                       .special_tokens = {"<|endoftext|>"},
                                       .add_bos_token = false,
                                       .configure = configure}});
}

}  // namespace ferry::models::detail
