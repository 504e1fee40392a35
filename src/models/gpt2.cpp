// GPT-2, read top to bottom: attention, MLP, block, model, head.
#include "ferry/models/gpt2.h"

#include "attention.h"
#include "ferry/nn/activation.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/embedding.h"
#include "ferry/nn/linear.h"
#include "ferry/nn/norm.h"

namespace ferry::models {
namespace {

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
    return (*c_proj_)(detail::attend(heads(qkv[0]), keys, values, mask));
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

class Gpt2Model : public nn::Callable<Gpt2Model> {
 public:
  Gpt2Model(const ModelConfig& c, at::ScalarType dtype) : Callable("GPT2Model") {
    wte =
        register_module("wte", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, dtype));
    wpe_ = register_module(
        "wpe", std::make_shared<nn::Embedding>(c.max_position_embeddings, c.hidden_size, dtype));
    auto list = register_module("h", std::make_shared<nn::ModuleList>());
    for (std::int64_t i = 0; i < c.n_layers; ++i) {
      blocks_.push_back(list->push_back(std::make_shared<Block>(c, dtype)));
    }
    ln_f_ = register_module(
        "ln_f", std::make_shared<nn::LayerNorm>(
                    c.hidden_size, nn::LayerNormOptions{.eps = c.norm_eps, .dtype = dtype}));
  }
  std::shared_ptr<nn::Embedding> wte;

 private:
  friend class Callable<Gpt2Model>;
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& attention_mask, KvCache* cache) {
    const at::Tensor token = (*wte)(ids);
    at::Tensor h = token + (*wpe_)(positions).to(token.device());
    const at::Tensor mask = detail::causal_mask(attention_mask, ids.size(1));
    for (std::size_t i = 0; i < blocks_.size(); ++i) h = (*blocks_[i])(h, mask, &cache->layer(i));
    return (*ln_f_)(h);
  }
  std::shared_ptr<nn::Embedding> wpe_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<nn::LayerNorm> ln_f_;
};

class Gpt2LMHeadModel final : public nn::Callable<Gpt2LMHeadModel>, public CausalLM {
 public:
  Gpt2LMHeadModel(const ModelConfig& c, at::ScalarType dtype)
      : Callable("GPT2LMHeadModel"), config_(c) {
    transformer_ = register_module("transformer", std::make_shared<Gpt2Model>(c, dtype));
    lm_head_ = register_module(
        "lm_head", std::make_shared<nn::Linear>(c.hidden_size, c.vocab_size,
                                                nn::LinearOptions{.bias = false, .dtype = dtype}));
    lm_head_->set_slot("weight", transformer_->wte->weight_slot());
  }
  nn::Module& module() override { return *this; }
  const ModelConfig& config() const override { return config_; }
  std::string decoder_layer_class() const override { return "GPT2Block"; }
  at::Tensor step(const StepInput& in, KvCache& cache) override {
    return (*this)(in.input_ids, in.position_ids, in.attention_mask, &cache)
        .to(at::kCPU)
        .to(at::kFloat);
  }

 private:
  friend class Callable<Gpt2LMHeadModel>;
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& attention_mask, KvCache* cache) {
    return (*lm_head_)((*transformer_)(ids, positions, attention_mask, cache));
  }
  ModelConfig config_;
  std::shared_ptr<Gpt2Model> transformer_;
  std::shared_ptr<nn::Linear> lm_head_;
};

}  // namespace

std::shared_ptr<CausalLM> make_gpt2(const ModelConfig& config, at::ScalarType dtype) {
  return std::make_shared<Gpt2LMHeadModel>(config, dtype);
}

CheckpointLayout gpt2_checkpoint_layout() {
  return {.embedding = "transformer.wte.weight",
          .layers_prefix = "transformer.h.",
          .n_layers_field = "n_layer",
          .hidden_size_field = "n_embd",
          .ignored_keys = {R"(transformer\.h\.\d+\.attn\.(masked_)?bias)"}};
}

}  // namespace ferry::models
