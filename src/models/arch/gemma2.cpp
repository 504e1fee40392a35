// Gemma 2, read top to bottom: config, model, make-model recipe, registration.
#include "models/arch/gemma2.h"

#include <cmath>

#include "models/architecture.h"
#include "models/blocks/decoder.h"

namespace ferry::models::detail {
namespace {

// transformers' Gemma2Config (its defaults where a field may be absent). The activation is
// hidden_activation (hidden_act, its older name, is read when that is absent).
void read_config(const Reader& r, ModelConfig& c) {
  read_decoder_fields(r, c,
                      {.max_position_embeddings = 8192,
                       .tie_word_embeddings = true,
                       .hidden_act = r.string("hidden_act", "gelu_pytorch_tanh"),
                       .hidden_act_field = "hidden_activation"});
  c.attention_bias = r.boolean("attention_bias", false);
  c.sliding_window = r.size("sliding_window", kMaxPositions, 4096);
  auto f = std::make_shared<Gemma2Fields>();
  f->query_pre_attn_scalar = r.positive_number("query_pre_attn_scalar", 256);
  // null turns a cap off, as in transformers.
  const auto cap = [&](const char* field, double fallback) -> std::optional<double> {
    if (r.json().contains(field) && r.json().at(field).is_null()) return std::nullopt;
    return r.positive_number(field, fallback);
  };
  f->attn_logit_softcapping = cap("attn_logit_softcapping", 50.0);
  f->final_logit_softcapping = cap("final_logit_softcapping", 30.0);
  c.fields = std::move(f);
}

void write_config(const ModelConfig& c, Json& j) {
  const auto& f = fields_of<Gemma2Fields>(c);
  j["architectures"] = {"Gemma2ForCausalLM"};
  write_decoder_fields(c, j, {.hidden_act_field = "hidden_activation"});
  j["head_dim"] = c.head_dim;  // Gemma configs always say it
  j["attention_bias"] = c.attention_bias;
  j["sliding_window"] = c.sliding_window ? Json(*c.sliding_window) : Json(nullptr);
  j["query_pre_attn_scalar"] = f.query_pre_attn_scalar;
  const auto cap = [](const std::optional<double>& v) { return v ? Json(*v) : Json(nullptr); };
  j["attn_logit_softcapping"] = cap(f.attn_logit_softcapping);
  j["final_logit_softcapping"] = cap(f.final_logit_softcapping);
}

std::shared_ptr<CausalLM> build(const ModelConfig& c, const ModelDTypes& dtypes,
                                const Naming& naming) {
  const at::ScalarType dtype = dtypes.weights;
  const auto& f = fields_of<Gemma2Fields>(c);
  auto make_norm = [&c, dtype] {
    return unary(
        std::make_shared<OffsetRmsNorm>("Gemma2RMSNorm", c.hidden_size, c.norm_eps, dtype));
  };
  auto make_layer = [&](std::int64_t index) {
    return std::make_shared<DecoderLayer>(DecoderLayerSpec{
        .class_name = "Gemma2DecoderLayer",
        .self_attn = std::make_shared<SelfAttention>(SelfAttentionOptions{
            .class_name = "Gemma2Attention",
            .hidden_size = c.hidden_size,
            .n_heads = c.n_heads,
            .n_kv_heads = c.n_kv_heads,
            .head_dim = c.head_dim,
            .qkv_bias = c.attention_bias,
            .o_bias = c.attention_bias,
            // transformers' Gemma2: layer 0, 2, 4, ... slide; 1, 3, 5, ... attend globally.
            .sliding = c.sliding_window.has_value() && index % 2 == 0,
            .attend = {.scale = 1.0 / std::sqrt(f.query_pre_attn_scalar),
                       .softcap = f.attn_logit_softcapping},
            .dtype = dtype}),
        .ffn = unary(
            std::make_shared<GatedMlp>(GatedMlpOptions{.class_name = "Gemma2MLP",
                                                       .hidden_size = c.hidden_size,
                                                       .intermediate_size = c.intermediate_size,
                                                       .activation = c.hidden_act,
                                                       .dtype = dtype})),
        .make_norm = make_norm,
        .attn_in = "input_layernorm",
        .attn_out = "post_attention_layernorm",
        .ffn_in = "pre_feedforward_layernorm",
        .ffn_out = "post_feedforward_layernorm"});
  };
  return decoder_causal_lm(
      c, dtypes, naming,
      DecoderLMSpec{.family = "Gemma2",
                    .make_layer = make_layer,
                    .make_norm = make_norm,
                    .rotary = standard_rotary(c),
                    .embedding_scale = std::sqrt(static_cast<double>(c.hidden_size)),
                    .final_softcap = f.final_logit_softcapping});
}

// A synthetic Gemma 2: caps low enough to bite on random weights, a short window so that the
// alternation shows in short prompts.
void configure(const MakeModelOptions& o, ModelConfig& c) {
  c.intermediate_size = o.intermediate_size ? o.intermediate_size : 4 * o.hidden_size;
  c.max_position_embeddings = o.max_position_embeddings ? o.max_position_embeddings : 8192;
  c.norm_eps = 1e-6;
  c.hidden_act = "gelu_pytorch_tanh";
  c.tie_word_embeddings = true;
  c.sliding_window = 4;
  auto f = std::make_shared<Gemma2Fields>();
  f->query_pre_attn_scalar = static_cast<double>(c.head_dim) * 2;
  f->attn_logit_softcapping = 0.02;
  f->final_logit_softcapping = 0.2;
  c.fields = std::move(f);
}

}  // namespace

void register_gemma2() {
  add_architecture({.model_type = "gemma2",
                    .read_config = read_config,
                    .write_config = write_config,
                    .build = build,
                    .layout = decoder_layout(),
                    .make = MakeRecipe{.layer_elements_per_hidden2 = 16.0,
                                       .special_tokens = {"<bos>", "<eos>"},
                                       .configure = configure}});
}

}  // namespace ferry::models::detail
