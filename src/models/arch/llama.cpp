// The Llama family, read top to bottom: config, layer, model, registration.
#include "models/arch/llama.h"

#include "ferry/nn/norm.h"
#include "io/printable.h"
#include "models/architecture.h"
#include "models/blocks/decoder.h"

namespace ferry::models::detail {
namespace {

std::string family_prefix(const std::string& model_type) {
  if (model_type == "mistral") return "Mistral";
  if (model_type == "qwen2") return "Qwen2";
  return "Llama";
}

// transformers' LlamaConfig, MistralConfig and Qwen2Config.
void read_config(const Reader& r, ModelConfig& c) {
  read_decoder_fields(r, c);
  c.attention_bias = c.model_type == "qwen2" ? true : r.boolean("attention_bias", false);
  c.mlp_bias = r.boolean("mlp_bias", false);
  // Qwen2 configs carry sliding_window too, but use_sliding_window is off in released models;
  // only Mistral's window is applied.
  if (c.model_type == "mistral" && r.has("sliding_window")) {
    c.sliding_window = r.size("sliding_window", kMaxPositions);
  }
  if (!r.has("rope_scaling")) return;
  const Json& s = r.json().at("rope_scaling");
  if (!s.is_object()) r.fail("rope_scaling", "must be an object or null");
  const Reader sr(s, r.file(), "rope_scaling.");
  std::string type = sr.string("rope_type", sr.string("type", ""));
  if (type == "default") return;
  if (type != "linear" && type != "llama3") {
    sr.fail("rope_type", fmt::format("'{}' is not supported (supported: linear, llama3)",
                                     io::printable(type.substr(0, 40))));
  }
  c.rope_scaling.type = type;
  // Every factor divides something (rope_inverse_frequencies in rotary.cpp): positive, finite.
  c.rope_scaling.factor = sr.positive_number("factor", 1.0);
  if (type == "llama3") {
    c.rope_scaling.low_freq_factor = sr.positive_number("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = sr.positive_number("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        sr.size("original_max_position_embeddings", kMaxPositions, 8192);
    // The smooth band divides by high_freq_factor - low_freq_factor.
    if (c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor) {
      sr.fail("high_freq_factor",
              fmt::format("({}) must be greater than low_freq_factor ({})",
                          c.rope_scaling.high_freq_factor, c.rope_scaling.low_freq_factor));
    }
  }
}

void write_config(const ModelConfig& c, Json& j) {
  j["architectures"] = {family_prefix(c.model_type) + "ForCausalLM"};
  write_decoder_fields(c, j);
  j["attention_bias"] = c.attention_bias;
  j["mlp_bias"] = c.mlp_bias;
  if (c.model_type == "mistral") {
    j["sliding_window"] = c.sliding_window ? Json(*c.sliding_window) : Json(nullptr);
  }
  if (c.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
    return;
  }
  Json s{{"rope_type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor}};
  if (c.rope_scaling.type == "llama3") {
    s["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    s["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    s["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
  }
  j["rope_scaling"] = s;
}

std::shared_ptr<CausalLM> build(const ModelConfig& c, const ModelDTypes& dtypes,
                                const Naming& naming) {
  const at::ScalarType dtype = dtypes.weights;
  const std::string family = family_prefix(c.model_type);
  auto make_norm = [&c, dtype] {
    return unary(std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, dtype));
  };
  auto make_layer = [&](std::int64_t) {
    return std::make_shared<DecoderLayer>(DecoderLayerSpec{
        .class_name = family + "DecoderLayer",
        .self_attn = std::make_shared<SelfAttention>(SelfAttentionOptions{
            .class_name = family + "Attention",
            .hidden_size = c.hidden_size,
            .n_heads = c.n_heads,
            .n_kv_heads = c.n_kv_heads,
            .head_dim = c.head_dim,
            .qkv_bias = c.attention_bias,
            // qwen2: biases on q, k, v but not o (attention_bias is forced true while parsing).
            .o_bias = c.model_type == "qwen2" ? false : c.attention_bias,
            .sliding = c.sliding_window.has_value(),
            .dtype = dtype}),
        .ffn = unary(
            std::make_shared<GatedMlp>(GatedMlpOptions{.class_name = family + "MLP",
                                                       .hidden_size = c.hidden_size,
                                                       .intermediate_size = c.intermediate_size,
                                                       .activation = c.hidden_act,
                                                       .bias = c.mlp_bias,
                                                       .dtype = dtype})),
        .make_norm = make_norm});
  };
  return decoder_causal_lm(c, dtypes, naming,
                           DecoderLMSpec{.family = family,
                                         .make_layer = make_layer,
                                         .make_norm = make_norm,
                                         .rotary = standard_rotary(c)});
}

void configure(const MakeModelOptions& o, ModelConfig& c) {
  c.intermediate_size =
      o.intermediate_size ? o.intermediate_size : (o.hidden_size * 11 / 4 + 63) / 64 * 64;
  c.max_position_embeddings = o.max_position_embeddings ? o.max_position_embeddings : 2048;
  c.norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.tie_word_embeddings = o.tie_word_embeddings;
  c.attention_bias = o.attention_bias || o.arch == "qwen2";
  c.mlp_bias = o.mlp_bias;
  if (!o.rope_scaling.empty()) {
    FERRY_CHECK(o.rope_scaling == "linear" || o.rope_scaling == "llama3", InvalidArgument,
                "make-model: rope scaling '{}' is not supported (linear, llama3)", o.rope_scaling);
    c.rope_scaling = {.type = o.rope_scaling,
                      .factor = 2.0,
                      .low_freq_factor = 1.0,
                      .high_freq_factor = 4.0,
                      .original_max_position_embeddings = 64};
  }
}

CheckpointLayout layout() {
  CheckpointLayout l = decoder_layout();
  // Older transformers saved each layer's rotary inv_freq buffer, recomputed here.
  l.ignored_keys = {R"(model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq)"};
  return l;
}

}  // namespace

void register_llama() {
  for (const char* model_type : {"llama", "mistral", "qwen2"}) {
    add_architecture(
        {.model_type = model_type,
         .read_config = read_config,
         .write_config = write_config,
         .build = build,
         .layout = layout(),
         .make = MakeRecipe{.configure = configure}});
  }
}

}  // namespace ferry::models::detail
