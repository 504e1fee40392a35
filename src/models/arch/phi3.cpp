// Phi-3, read top to bottom: config, rotary, model, make-model recipe, registration.
#include "models/arch/phi3.h"

#include <cmath>

#include "ferry/nn/norm.h"
#include "io/printable.h"
#include "models/architecture.h"
#include "models/blocks/decoder.h"
#include "models/blocks/rotary.h"

namespace ferry::models::detail {
namespace {

std::int64_t rotary_dim(const ModelConfig& c, const Phi3Fields& f) {
  return static_cast<std::int64_t>(static_cast<double>(c.head_dim) * f.partial_rotary_factor);
}

// transformers' Phi3Config (its defaults where a field may be absent).
void read_config(const Reader& r, ModelConfig& c) {
  read_decoder_fields(r, c, {.max_position_embeddings = 4096, .rms_norm_eps = 1e-5});
  if (r.has("sliding_window")) c.sliding_window = r.size("sliding_window", kMaxPositions);
  auto f = std::make_shared<Phi3Fields>();
  f->partial_rotary_factor = r.positive_number("partial_rotary_factor", 1.0);
  if (f->partial_rotary_factor > 1.0) {
    r.fail("partial_rotary_factor",
           fmt::format("must be at most 1, got {}", f->partial_rotary_factor));
  }
  const std::int64_t dim = rotary_dim(c, *f);
  if (dim < 2 || dim % 2 != 0) {
    r.fail("partial_rotary_factor",
           fmt::format("({}) of head_dim {} must give an even rotary size, got {}",
                       f->partial_rotary_factor, c.head_dim, dim));
  }
  f->original_max_position_embeddings =
      r.size("original_max_position_embeddings", kMaxPositions, c.max_position_embeddings);
  if (r.has("rope_scaling")) {
    const Json& s = r.json().at("rope_scaling");
    if (!s.is_object()) r.fail("rope_scaling", "must be an object or null");
    const Reader sr(s, r.file(), "rope_scaling.");
    const std::string type = sr.string("rope_type", sr.string("type", ""));
    if (type != "longrope" && type != "su" && type != "default") {
      sr.fail("type", fmt::format("'{}' is not supported (supported: longrope, su)",
                                  io::printable(type.substr(0, 40))));
    }
    if (type != "default") {
      f->short_factor = sr.positive_numbers("short_factor");
      f->long_factor = sr.positive_numbers("long_factor");
      const auto half = static_cast<std::size_t>(dim / 2);
      for (const auto& [name, factors] : {std::pair{"short_factor", &f->short_factor},
                                          std::pair{"long_factor", &f->long_factor}}) {
        if (factors->size() != half) {
          sr.fail(name, fmt::format("must have rotary_dim / 2 = {} entries, got {}", half,
                                    factors->size()));
        }
      }
      if (sr.has("attention_factor")) {
        f->attention_factor = sr.positive_number("attention_factor", 1.0);
      }
    }
  }
  c.fields = std::move(f);
}

void write_config(const ModelConfig& c, Json& j) {
  const auto& f = fields_of<Phi3Fields>(c);
  j["architectures"] = {"Phi3ForCausalLM"};
  write_decoder_fields(c, j);
  j["original_max_position_embeddings"] = f.original_max_position_embeddings;
  j["partial_rotary_factor"] = f.partial_rotary_factor;
  j["sliding_window"] = c.sliding_window ? Json(*c.sliding_window) : Json(nullptr);
  if (f.short_factor.empty()) {
    j["rope_scaling"] = nullptr;
    return;
  }
  Json s{{"type", "longrope"}, {"short_factor", f.short_factor}, {"long_factor", f.long_factor}};
  if (f.attention_factor) s["attention_factor"] = *f.attention_factor;
  j["rope_scaling"] = s;
}

// LongRoPE as transformers' _compute_longrope_parameters and its dynamic update: the long
// factors once a step's largest position reaches original_max_position_embeddings, else the
// short ones; cos and sin times the attention factor either way.
RotaryFunction longrope(const ModelConfig& c, const Phi3Fields& f) {
  const std::int64_t dim = rotary_dim(c, f);
  if (f.short_factor.empty()) {
    const at::Tensor inv = default_inverse_frequencies(c.rope_theta, dim);
    return [inv](const at::Tensor& positions) { return rope_cos_sin(inv, positions); };
  }
  const double original = static_cast<double>(f.original_max_position_embeddings);
  const double scale = static_cast<double>(c.max_position_embeddings) / original;
  const double attention_factor = f.attention_factor.value_or(
      scale <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(scale) / std::log(original)));
  const at::Tensor short_inv = longrope_inverse_frequencies(c.rope_theta, dim, f.short_factor);
  const at::Tensor long_inv = longrope_inverse_frequencies(c.rope_theta, dim, f.long_factor);
  const std::int64_t limit = f.original_max_position_embeddings;
  return [=](const at::Tensor& positions) {
    const bool beyond = positions.numel() > 0 && positions.max().item<std::int64_t>() + 1 > limit;
    return rope_cos_sin(beyond ? long_inv : short_inv, positions, attention_factor);
  };
}

std::shared_ptr<CausalLM> build(const ModelConfig& c, const ModelDTypes& dtypes,
                                const Naming& naming) {
  const at::ScalarType dtype = dtypes.weights;
  auto make_norm = [&c, dtype] {
    return unary(std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, dtype));
  };
  auto make_layer = [&](std::int64_t) {
    return std::make_shared<DecoderLayer>(DecoderLayerSpec{
        .class_name = "Phi3DecoderLayer",
        .self_attn = std::make_shared<SelfAttention>(
            SelfAttentionOptions{.class_name = "Phi3Attention",
                                 .hidden_size = c.hidden_size,
                                 .n_heads = c.n_heads,
                                 .n_kv_heads = c.n_kv_heads,
                                 .head_dim = c.head_dim,
                                 .fused_qkv = true,
                                 .sliding = c.sliding_window.has_value(),
                                 .dtype = dtype}),
        .ffn = unary(
            std::make_shared<GatedMlp>(GatedMlpOptions{.class_name = "Phi3MLP",
                                                       .hidden_size = c.hidden_size,
                                                       .intermediate_size = c.intermediate_size,
                                                       .activation = c.hidden_act,
                                                       .fused_gate_up = true,
                                                       .act_name = "activation_fn",
                                                       .dtype = dtype})),
        .make_norm = make_norm});
  };
  return decoder_causal_lm(c, dtypes, naming,
                           DecoderLMSpec{.family = "Phi3",
                                         .make_layer = make_layer,
                                         .make_norm = make_norm,
                                         .rotary = longrope(c, fields_of<Phi3Fields>(c))});
}

// A synthetic Phi-3: LongRoPE over a quarter of the positions, distinct short and long factors.
void configure(const MakeModelOptions& o, ModelConfig& c) {
  c.intermediate_size =
      o.intermediate_size ? o.intermediate_size : (o.hidden_size * 8 / 3 + 63) / 64 * 64;
  c.max_position_embeddings = o.max_position_embeddings ? o.max_position_embeddings : 4096;
  c.norm_eps = 1e-5;
  c.tie_word_embeddings = o.tie_word_embeddings;
  auto f = std::make_shared<Phi3Fields>();
  f->original_max_position_embeddings = std::max<std::int64_t>(1, c.max_position_embeddings / 4);
  for (std::int64_t i = 0; i < c.head_dim / 2; ++i) {
    f->short_factor.push_back(1.0 + 0.05 * static_cast<double>(i));
    f->long_factor.push_back(1.0 + 0.75 * static_cast<double>(i));
  }
  c.fields = std::move(f);
}

}  // namespace

void register_phi3() {
  add_architecture({.model_type = "phi3",
                    .read_config = read_config,
                    .write_config = write_config,
                    .build = build,
                    .layout = decoder_layout(),
                    .make = MakeRecipe{.configure = configure}});
}

}  // namespace ferry::models::detail
