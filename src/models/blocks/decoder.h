#pragma once
// The decoder shared by the architectures (private to models): a pre-norm residual layer made of
// a self-attention, a feed-forward unit (an MLP, or Mixtral's experts) and norms in any of four
// roles; the backbone (embeddings, layers, final norm: transformers' <Family>Model); and the
// causal-LM tail (the backbone under its name, the head, optionally tied and soft-capped) that
// implements CausalLM for every architecture.

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ferry/models/causal_lm.h"
#include "ferry/nn/embedding.h"
#include "ferry/nn/linear.h"
#include "models/architecture.h"
#include "models/blocks/attention.h"
#include "models/blocks/layers.h"

namespace ferry::models::detail {

struct DecoderLayerSpec {
  std::string class_name;  // "LlamaDecoderLayer", ...
  std::shared_ptr<SelfAttention> self_attn;
  std::string ffn_name = "mlp";  // the feed-forward unit's name ("block_sparse_moe": Mixtral)
  Unary ffn;
  // Norms by role, each named as the checkpoint names it ("" = no norm in that role):
  //   h   = x + attn_out(self_attn(attn_in(x)))
  //   out = h + ffn_out(ffn(ffn_in(h)))
  // Llama-like layers norm the inputs only; Gemma 2 norms inputs and outputs.
  std::function<Unary()> make_norm;
  std::string attn_in = "input_layernorm";
  std::string attn_out;
  std::string ffn_in = "post_attention_layernorm";
  std::string ffn_out;
};

class DecoderLayer : public nn::Callable<DecoderLayer> {
 public:
  explicit DecoderLayer(DecoderLayerSpec spec);

 private:
  friend class Callable<DecoderLayer>;
  // The cache is a pointer (hooks do not see it); LayerCache::append keeps it where this
  // layer's inputs arrive, i.e. on its execution device.
  at::Tensor forward(const at::Tensor& x, LayerContext ctx, LayerCache* cache);

  std::shared_ptr<SelfAttention> self_attn_;
  Unary ffn_;
  std::optional<Unary> attn_in_, attn_out_, ffn_in_, ffn_out_;
};

// A backbone (transformers' <Family>Model) in the three parts of a pipeline stage (Note [Pipeline
// stages]); its forward is norm(layers(embed(...), 0, n)).
class StagedBackbone {
 public:
  virtual ~StagedBackbone() = default;
  virtual at::Tensor embed(const at::Tensor& ids, const at::Tensor& positions) = 0;
  // Decoder layers [begin, end) on hidden states `h` of the step's `tokens` new tokens.
  virtual at::Tensor layers(at::Tensor h, const at::Tensor& positions,
                            const at::Tensor& attention_mask, KvCache& cache, std::int64_t begin,
                            std::int64_t end) = 0;
  virtual at::Tensor norm(const at::Tensor& h) = 0;
  // Paths relative to the backbone: the embeddings, the layers' container, the final norm.
  virtual std::vector<std::string> embedding_names() const = 0;
  virtual std::string layers_name() const = 0;
  virtual std::string norm_name() const = 0;
  virtual std::int64_t n_layers() const = 0;
};

// Rotary cos and sin for a step's position ids [batch, tokens].
using RotaryFunction = std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&)>;

struct BackboneSpec {
  std::string class_name;  // "LlamaModel", ...
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t n_layers = 0;
  at::ScalarType dtype = at::kFloat;          // the embedding table's
  at::ScalarType compute_dtype = at::kFloat;  // the hidden states' (Note [Compute dtype])
  std::function<std::shared_ptr<DecoderLayer>(std::int64_t index)> make_layer;
  std::function<Unary()> make_norm;       // the final "norm"
  std::optional<double> embedding_scale;  // Gemma: embeddings times sqrt(hidden_size)
  RotaryFunction rotary;
  // Builds LayerContext::sliding_mask (layers with SelfAttentionOptions::sliding use it).
  std::optional<std::int64_t> sliding_window;
};

// transformers' <Family>Model: embed_tokens, layers.N, norm → hidden states.
class DecoderBackbone : public nn::Callable<DecoderBackbone>, public StagedBackbone {
 public:
  explicit DecoderBackbone(BackboneSpec spec);
  const nn::SlotPtr& embedding_slot() const { return embed_tokens_->weight_slot(); }

  at::Tensor embed(const at::Tensor& ids, const at::Tensor& positions) override;
  at::Tensor layers(at::Tensor h, const at::Tensor& positions, const at::Tensor& attention_mask,
                    KvCache& cache, std::int64_t begin, std::int64_t end) override;
  at::Tensor norm(const at::Tensor& h) override { return norm_(h); }
  std::vector<std::string> embedding_names() const override { return {"embed_tokens"}; }
  std::string layers_name() const override { return "layers"; }
  std::string norm_name() const override { return "norm"; }
  std::int64_t n_layers() const override { return static_cast<std::int64_t>(layers_.size()); }

 private:
  friend class Callable<DecoderBackbone>;
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& attention_mask, KvCache* cache);

  BackboneSpec spec_;
  std::shared_ptr<nn::Embedding> embed_tokens_;
  std::vector<std::shared_ptr<DecoderLayer>> layers_;
  Unary norm_;
};

// Runs a backbone: (input ids, position ids, attention mask, cache) -> hidden states.
using BackboneCall =
    std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, KvCache*)>;

template <class B>
BackboneCall backbone_call(const std::shared_ptr<B>& backbone) {
  B* raw = backbone.get();
  return [raw](const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& mask,
               KvCache* cache) { return (*raw)(ids, positions, mask, cache); };
}

struct TailSpec {
  std::string class_name;           // "LlamaForCausalLM", ...
  std::string decoder_layer_class;  // CausalLM::decoder_layer_class
  // CausalLM::no_split_classes (empty: the decoder layer) and on_demand_classes.
  std::vector<std::string> no_split_classes;
  std::vector<std::string> on_demand_classes;
  std::string base_name = "model";  // the backbone's name: transformers' base_model_prefix
  Naming naming;                    // unprefixed: the backbone's children sit on the root
  std::shared_ptr<nn::Module> backbone;
  BackboneCall call_backbone;
  StagedBackbone* stages = nullptr;  // the backbone in parts (Note [Pipeline stages])
  nn::SlotPtr tied_embedding;           // the head's weight is this slot; null: its own
  std::optional<double> final_softcap;  // logits become cap * tanh(logits / cap) (Gemma 2)
};

// transformers' <Family>ForCausalLM: the backbone and lm_head.
class CausalLMTail final : public nn::Callable<CausalLMTail>, public CausalLM {
 public:
  CausalLMTail(const ModelConfig& config, at::ScalarType dtype, TailSpec spec);
  nn::Module& module() override { return *this; }
  const ModelConfig& config() const override { return config_; }
  std::string decoder_layer_class() const override { return spec_.decoder_layer_class; }
  std::vector<std::string> no_split_classes() const override;
  std::vector<std::string> on_demand_classes() const override { return spec_.on_demand_classes; }
  at::Tensor step(const StepInput& input, KvCache& cache) override;
  StageParts stage_parts() const override;
  at::Tensor embed(const StepInput& input) override;
  at::Tensor layers(const at::Tensor& hidden, const StepInput& input, KvCache& cache,
                    std::int64_t begin, std::int64_t end) override;
  at::Tensor head(const at::Tensor& hidden) override;

 private:
  friend class Callable<CausalLMTail>;
  at::Tensor logits(const at::Tensor& hidden);
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& attention_mask, KvCache* cache);

  ModelConfig config_;
  TailSpec spec_;
  std::shared_ptr<nn::Linear> lm_head_;
};

// Rotary cos/sin over head_dim from the config's rope_theta and rope_scaling.
RotaryFunction standard_rotary(const ModelConfig& config);

// A decoder-only causal LM as the Llama-like families build it: "<family>Model" (embed_tokens,
// layers.N, norm; sized from the config) under "<family>ForCausalLM" (lm_head, tied to the
// embeddings when the config says so). Each architecture says only what differs.
struct DecoderLMSpec {
  std::string family;  // names <family>Model, <family>DecoderLayer and <family>ForCausalLM
  std::function<std::shared_ptr<DecoderLayer>(std::int64_t index)> make_layer;
  std::function<Unary()> make_norm;       // the final "norm"
  RotaryFunction rotary;
  std::optional<double> embedding_scale;  // Gemma: embeddings times sqrt(hidden_size)
  std::vector<std::string> no_split_classes;   // empty: the decoder layer
  std::vector<std::string> on_demand_classes;  // CausalLM::on_demand_classes
  std::optional<double> final_softcap;         // Gemma 2
};
std::shared_ptr<CausalLM> decoder_causal_lm(const ModelConfig& c, const ModelDTypes& dtypes,
                                            const Naming& naming, DecoderLMSpec spec);

// Where such a model's checkpoint keeps its embeddings and layers.
CheckpointLayout decoder_layout();

}  // namespace ferry::models::detail
