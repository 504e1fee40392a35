#include "models/blocks/decoder.h"

#include "ferry/core/error.h"
#include "ferry/nn/containers.h"
#include "models/blocks/rotary.h"

namespace ferry::models::detail {

DecoderLayer::DecoderLayer(DecoderLayerSpec spec) : Callable(spec.class_name) {
  self_attn_ = register_module("self_attn", std::move(spec.self_attn));
  ffn_ = spec.ffn;
  register_module(spec.ffn_name, spec.ffn.module);
  auto norm = [&](const std::string& name) -> std::optional<Unary> {
    if (name.empty()) return std::nullopt;
    Unary u = spec.make_norm();
    register_module(name, u.module);
    return u;
  };
  attn_in_ = norm(spec.attn_in);
  attn_out_ = norm(spec.attn_out);
  ffn_in_ = norm(spec.ffn_in);
  ffn_out_ = norm(spec.ffn_out);
}

at::Tensor DecoderLayer::forward(const at::Tensor& x, LayerContext ctx, LayerCache* cache) {
  auto apply = [](const std::optional<Unary>& norm, const at::Tensor& y) {
    return norm ? (*norm)(y) : y;
  };
  const at::Tensor h = x + apply(attn_out_, (*self_attn_)(apply(attn_in_, x), ctx, cache));
  return h + apply(ffn_out_, ffn_(apply(ffn_in_, h)));
}

DecoderBackbone::DecoderBackbone(BackboneSpec spec)
    : Callable(spec.class_name), spec_(std::move(spec)) {
  embed_tokens_ = register_module(
      "embed_tokens", std::make_shared<nn::Embedding>(spec_.vocab_size, spec_.hidden_size,
                                                      spec_.dtype, spec_.compute_dtype));
  auto list = register_module("layers", std::make_shared<nn::ModuleList>());
  for (std::int64_t i = 0; i < spec_.n_layers; ++i) {
    layers_.push_back(list->push_back(spec_.make_layer(i)));
  }
  norm_ = spec_.make_norm();
  register_module("norm", norm_.module);
  // The factories may refer to the builder's locals: never called again.
  spec_.make_layer = nullptr;
  spec_.make_norm = nullptr;
}

at::Tensor DecoderBackbone::forward(const at::Tensor& ids, const at::Tensor& positions,
                                    const at::Tensor& attention_mask, KvCache* cache) {
  return norm_(layers(embed(ids, positions), positions, attention_mask, *cache, 0, n_layers()));
}

at::Tensor DecoderBackbone::embed(const at::Tensor& ids, const at::Tensor& positions) {
  at::Tensor h = (*embed_tokens_)(ids);
  if (spec_.embedding_scale) {
    // transformers rounds the scale to the hidden states' dtype before multiplying.
    h = h * at::scalar_tensor(*spec_.embedding_scale, h.options());
  }
  return h;
}

at::Tensor DecoderBackbone::layers(at::Tensor h, const at::Tensor& positions,
                                   const at::Tensor& attention_mask, KvCache& cache,
                                   std::int64_t begin, std::int64_t end) {
  if (begin >= end) return h;
  const std::int64_t tokens = positions.size(1);
  auto [cos, sin] = spec_.rotary(positions);
  LayerContext ctx{.cos = cos, .sin = sin, .mask = causal_mask(attention_mask, tokens)};
  // The cache keeps every position (no rolling buffer); the mask alone applies the window.
  ctx.sliding_mask = spec_.sliding_window
                         ? causal_mask(attention_mask, tokens, spec_.sliding_window)
                         : ctx.mask;
  for (std::int64_t i = begin; i < end; ++i) {
    const auto l = static_cast<std::size_t>(i);
    h = (*layers_[l])(h, ctx, &cache.layer(l));
  }
  return h;
}

CausalLMTail::CausalLMTail(const ModelConfig& config, at::ScalarType dtype, TailSpec spec)
    : Callable(spec.class_name), config_(config), spec_(std::move(spec)) {
  if (spec_.naming.base_model_prefixed) {
    register_module(spec_.base_name, spec_.backbone);
  } else {
    // The checkpoint names the base model's tensors without its prefix (Naming): adopt its
    // children; the backbone's forward still calls them through their own hooks.
    for (const auto& [name, child] : spec_.backbone->children()) register_module(name, child);
  }
  lm_head_ = register_module(
      "lm_head", std::make_shared<nn::Linear>(config.hidden_size, config.vocab_size,
                                              nn::LinearOptions{.bias = false, .dtype = dtype}));
  if (spec_.tied_embedding) lm_head_->set_slot("weight", spec_.tied_embedding);
}

std::vector<std::string> CausalLMTail::no_split_classes() const {
  if (spec_.no_split_classes.empty()) return {spec_.decoder_layer_class};
  return spec_.no_split_classes;
}

at::Tensor CausalLMTail::step(const StepInput& in, KvCache& cache) {
  return (*this)(in.input_ids, in.position_ids, in.attention_mask, &cache)
      .to(at::kCPU)
      .to(at::kFloat);
}

at::Tensor CausalLMTail::forward(const at::Tensor& ids, const at::Tensor& positions,
                                 const at::Tensor& attention_mask, KvCache* cache) {
  return logits(spec_.call_backbone(ids, positions, attention_mask, cache));
}

at::Tensor CausalLMTail::logits(const at::Tensor& hidden) {
  const at::Tensor logits = (*lm_head_)(hidden);
  if (!spec_.final_softcap) return logits;
  return at::tanh(logits / *spec_.final_softcap) * *spec_.final_softcap;
}

// Note [Pipeline stages]
// ~~~~~~~~~~~~~~~~~~~~~~
// A model spread over ranks (engine::Pipeline) runs its step in three parts: the embeddings,
// any contiguous range of decoder layers, and the head (final norm, lm_head, soft cap). Each
// part calls its modules through their own hooks, so a stage's layers can rest on its GPUs, RAM
// or disk as its plan says; the backbone's and the tail's own hooks are not run, which is why a
// stage is dispatched with a map that names each part (Stage maps, engine/pipeline.cpp) rather
// than the backbone or the root. Rank 0 holds the embeddings and the head (tied in many models)
// and the first layers; the other ranks hold only layers. step() itself is unchanged, and equal
// to the parts run in order (tested for every architecture).
CausalLM::StageParts CausalLMTail::stage_parts() const {
  FERRY_CHECK(spec_.stages != nullptr, Unsupported, "{} cannot run as pipeline stages",
              spec_.class_name);
  const std::string base =
      spec_.naming.base_model_prefixed ? spec_.base_name + "." : std::string();
  StageParts parts;
  for (const std::string& name : spec_.stages->embedding_names()) parts.first.push_back(base + name);
  for (std::int64_t i = 0; i < spec_.stages->n_layers(); ++i) {
    parts.layers.push_back(fmt::format("{}{}.{}", base, spec_.stages->layers_name(), i));
  }
  parts.last = {base + spec_.stages->norm_name(), "lm_head"};
  return parts;
}

at::Tensor CausalLMTail::embed(const StepInput& in) {
  FERRY_CHECK(spec_.stages != nullptr, Unsupported, "{} cannot run as pipeline stages",
              spec_.class_name);
  return spec_.stages->embed(in.input_ids, in.position_ids);
}

at::Tensor CausalLMTail::layers(const at::Tensor& hidden, const StepInput& in, KvCache& cache,
                                std::int64_t begin, std::int64_t end) {
  FERRY_CHECK(spec_.stages != nullptr, Unsupported, "{} cannot run as pipeline stages",
              spec_.class_name);
  FERRY_CHECK(0 <= begin && begin <= end && end <= spec_.stages->n_layers(), InvalidArgument,
              "{}: layers [{}, {}) asked of a model of {} layers", spec_.class_name, begin, end,
              spec_.stages->n_layers());
  return spec_.stages->layers(hidden, in.position_ids, in.attention_mask, cache, begin, end);
}

at::Tensor CausalLMTail::head(const at::Tensor& hidden) {
  FERRY_CHECK(spec_.stages != nullptr, Unsupported, "{} cannot run as pipeline stages",
              spec_.class_name);
  return logits(spec_.stages->norm(hidden)).to(at::kCPU).to(at::kFloat);
}

RotaryFunction standard_rotary(const ModelConfig& config) {
  const at::Tensor inverse_frequencies = rope_inverse_frequencies(config);
  return [inverse_frequencies](const at::Tensor& positions) {
    return rope_cos_sin(inverse_frequencies, positions);
  };
}

std::shared_ptr<CausalLM> decoder_causal_lm(const ModelConfig& c, const ModelDTypes& dtypes,
                                            const Naming& naming, DecoderLMSpec spec) {
  auto backbone =
      std::make_shared<DecoderBackbone>(BackboneSpec{.class_name = spec.family + "Model",
                                                     .vocab_size = c.vocab_size,
                                                     .hidden_size = c.hidden_size,
                                                     .n_layers = c.n_layers,
                                                     .dtype = dtypes.weights,
                                                     .compute_dtype = dtypes.compute,
                                                     .make_layer = spec.make_layer,
                                                     .make_norm = spec.make_norm,
                                                     .embedding_scale = spec.embedding_scale,
                                                     .rotary = std::move(spec.rotary),
                                                     .sliding_window = c.sliding_window});
  return std::make_shared<CausalLMTail>(
      c, dtypes.weights,
      TailSpec{.class_name = spec.family + "ForCausalLM",
               .decoder_layer_class = spec.family + "DecoderLayer",
               .no_split_classes = std::move(spec.no_split_classes),
               .on_demand_classes = std::move(spec.on_demand_classes),
               .naming = naming,
               .backbone = backbone,
               .call_backbone = backbone_call(backbone),
               .stages = backbone.get(),
               .tied_embedding = c.tie_word_embeddings ? backbone->embedding_slot() : nullptr,
               .final_softcap = spec.final_softcap});
}

CheckpointLayout decoder_layout() {
  return {.embedding = "model.embed_tokens.weight", .layers_prefix = "model.layers."};
}

}  // namespace ferry::models::detail
