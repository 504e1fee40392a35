// Mixtral, read top to bottom: config, experts, model, make-model recipe, registration.
#include "models/arch/mixtral.h"

#include "ferry/nn/containers.h"
#include "ferry/nn/norm.h"
#include "models/architecture.h"
#include "models/blocks/decoder.h"

namespace ferry::models::detail {
namespace {

constexpr const char* kExpertClass = "MixtralBlockSparseTop2MLP";

// transformers' MixtralConfig (its defaults where a field may be absent).
void read_config(const Reader& r, ModelConfig& c) {
  read_decoder_fields(
      r, c, {.max_position_embeddings = 4096 * 32, .rms_norm_eps = 1e-5, .rope_theta = 1e6});
  if (r.has("sliding_window")) c.sliding_window = r.size("sliding_window", kMaxPositions);
  auto f = std::make_shared<MixtralFields>();
  f->n_experts = r.size("num_local_experts", kMaxDimension, 8);
  f->n_experts_per_token = r.size("num_experts_per_tok", kMaxDimension, 2);
  if (f->n_experts_per_token > f->n_experts) {
    r.fail("num_experts_per_tok", fmt::format("({}) must be at most num_local_experts ({})",
                                              f->n_experts_per_token, f->n_experts));
  }
  c.fields = std::move(f);
}

void write_config(const ModelConfig& c, Json& j) {
  const auto& f = fields_of<MixtralFields>(c);
  j["architectures"] = {"MixtralForCausalLM"};
  write_decoder_fields(c, j);
  j["sliding_window"] = c.sliding_window ? Json(*c.sliding_window) : Json(nullptr);
  j["num_local_experts"] = f.n_experts;
  j["num_experts_per_tok"] = f.n_experts_per_token;
}

// Every expert's MLP counts, and the router.
double parameter_bound(const ModelConfig& c) {
  const auto& f = fields_of<MixtralFields>(c);
  const auto d = [](std::int64_t v) { return static_cast<double>(v); };
  const double experts =
      d(c.n_layers) * d(f.n_experts) * 3 * d(c.hidden_size) * d(c.intermediate_size);
  return decoder_parameter_bound(c) + experts + d(c.n_layers) * d(f.n_experts) * d(c.hidden_size);
}

// Note [Routed experts]
// The experts of a layer are separate modules, each of a no-split class of its own, so the
// planner places them one by one. Dispatched offloaded, an expert is one block (its class is a
// preload class: w1, w2, w3 load together) that the prefetcher loads only when the expert is
// called (an on-demand class: never prefetched from the order of an earlier step, whose routing
// differs). The router runs first; only the experts some token chose are called, so a step
// reads the chosen experts' bytes and no others — about top_k / n_experts of the expert bytes
// per token, against all of them for a placement by whole decoder layers.
class SparseMoe : public nn::Callable<SparseMoe> {
 public:
  SparseMoe(const ModelConfig& c, const MixtralFields& f, at::ScalarType dtype)
      : Callable("MixtralSparseMoeBlock"), top_k_(f.n_experts_per_token) {
    gate_ = register_module(
        "gate", std::make_shared<nn::Linear>(c.hidden_size, f.n_experts,
                                             nn::LinearOptions{.bias = false, .dtype = dtype}));
    auto list = register_module("experts", std::make_shared<nn::ModuleList>());
    for (std::int64_t e = 0; e < f.n_experts; ++e) {
      experts_.push_back(list->push_back(
          std::make_shared<GatedMlp>(GatedMlpOptions{.class_name = kExpertClass,
                                                     .hidden_size = c.hidden_size,
                                                     .intermediate_size = c.intermediate_size,
                                                     .activation = c.hidden_act,
                                                     .gate_name = "w1",
                                                     .up_name = "w3",
                                                     .down_name = "w2",
                                                     .dtype = dtype})));
    }
  }

 private:
  friend class Callable<SparseMoe>;
  // As transformers' MixtralSparseMoeBlock: softmax over all experts in float32, the top k,
  // renormalised, in the hidden states' dtype; each chosen expert's output weighted and summed.
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor tokens = x.reshape({-1, x.size(-1)});
    const at::Tensor probabilities = at::softmax((*gate_)(tokens).to(at::kFloat), -1);
    auto [weights, chosen] = probabilities.topk(top_k_, -1);
    weights = (weights / weights.sum(-1, /*keepdim=*/true)).to(x.scalar_type()).to(x.device());
    chosen = chosen.to(at::kCPU);
    at::Tensor out = at::zeros_like(tokens);
    for (std::size_t e = 0; e < experts_.size(); ++e) {
      const at::Tensor hits = (chosen == static_cast<std::int64_t>(e)).nonzero();  // [n, 2]
      if (hits.size(0) == 0) continue;  // not called: an offloaded expert is not read
      const at::Tensor rows = hits.select(1, 0).to(x.device());
      const at::Tensor slots = hits.select(1, 1).to(x.device());
      const at::Tensor y = (*experts_[e])(tokens.index_select(0, rows)).to(x.device());
      const at::Tensor weight = weights.reshape({-1}).index_select(0, rows * top_k_ + slots);
      out.index_add_(0, rows, y * weight.unsqueeze(-1));
    }
    return out.reshape(x.sizes());
  }
  std::int64_t top_k_;
  std::shared_ptr<nn::Linear> gate_;
  std::vector<std::shared_ptr<GatedMlp>> experts_;
};

std::shared_ptr<CausalLM> build(const ModelConfig& c, const ModelDTypes& dtypes,
                                const Naming& naming) {
  const at::ScalarType dtype = dtypes.weights;
  const auto& f = fields_of<MixtralFields>(c);
  auto make_norm = [&c, dtype] {
    return unary(std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, dtype));
  };
  auto make_layer = [&](std::int64_t) {
    return std::make_shared<DecoderLayer>(
        DecoderLayerSpec{.class_name = "MixtralDecoderLayer",
                         .self_attn = std::make_shared<SelfAttention>(
                             SelfAttentionOptions{.class_name = "MixtralAttention",
                                                  .hidden_size = c.hidden_size,
                                                  .n_heads = c.n_heads,
                                                  .n_kv_heads = c.n_kv_heads,
                                                  .head_dim = c.head_dim,
                                                  .sliding = c.sliding_window.has_value(),
                                                  .dtype = dtype}),
                         .ffn_name = "block_sparse_moe",
                         .ffn = unary(std::make_shared<SparseMoe>(c, f, dtype)),
                         .make_norm = make_norm});
  };
  return decoder_causal_lm(c, dtypes, naming,
                           DecoderLMSpec{.family = "Mixtral",
                                         .make_layer = make_layer,
                                         .make_norm = make_norm,
                                         .rotary = standard_rotary(c),
                                         .no_split_classes = {"MixtralAttention", kExpertClass},
                                         .on_demand_classes = {kExpertClass}});
}

// A synthetic Mixtral: 8 experts, 2 per token, each expert's MLP 2 x hidden wide.
void configure(const MakeModelOptions& o, ModelConfig& c) {
  c.intermediate_size = o.intermediate_size ? o.intermediate_size : 2 * o.hidden_size;
  c.max_position_embeddings = o.max_position_embeddings ? o.max_position_embeddings : 4096;
  c.norm_eps = 1e-5;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = o.tie_word_embeddings;
  c.fields = std::make_shared<MixtralFields>();
}

}  // namespace

void register_mixtral() {
  add_architecture(
      {.model_type = "mixtral",
       .read_config = read_config,
       .write_config = write_config,
       .parameter_bound = parameter_bound,
       .build = build,
       .layout = decoder_layout(),
       // Attention (4 h^2) and 8 experts of 3 x h x 2h.
       .make = MakeRecipe{.layer_elements_per_hidden2 = 52.0, .configure = configure}});
}

}  // namespace ferry::models::detail
