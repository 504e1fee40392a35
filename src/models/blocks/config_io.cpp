#include "models/blocks/config_io.h"

namespace ferry::models::detail {

void read_decoder_fields(const Reader& r, ModelConfig& c, const DecoderDefaults& d) {
  c.vocab_size = r.size("vocab_size", kMaxVocabSize);
  c.hidden_size = r.size("hidden_size", kMaxDimension);
  c.intermediate_size = r.size("intermediate_size", kMaxDimension);
  c.n_layers = r.size("num_hidden_layers", kMaxDimension);
  c.n_heads = r.size("num_attention_heads", kMaxDimension);
  c.n_kv_heads = r.size("num_key_value_heads", kMaxDimension, c.n_heads);
  c.max_position_embeddings =
      r.size("max_position_embeddings", kMaxPositions, d.max_position_embeddings);
  c.norm_eps = r.positive_number("rms_norm_eps", d.rms_norm_eps);
  c.rope_theta = r.positive_number("rope_theta", d.rope_theta);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", d.tie_word_embeddings);
  c.hidden_act = r.string(d.hidden_act_field, d.hidden_act);
  if (r.has("head_dim")) {
    c.head_dim = r.size("head_dim", kMaxDimension);
  } else {
    if (c.hidden_size % c.n_heads != 0) {
      r.fail("num_attention_heads",
             fmt::format("({}) must divide hidden_size ({})", c.n_heads, c.hidden_size));
    }
    c.head_dim = c.hidden_size / c.n_heads;
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    r.fail("num_key_value_heads",
           fmt::format("({}) must be positive and divide num_attention_heads ({})", c.n_kv_heads,
                       c.n_heads));
  }
  if (c.head_dim % 2 != 0) r.fail("head_dim", fmt::format("must be even, got {}", c.head_dim));
}

void write_decoder_fields(const ModelConfig& c, Json& j, const DecoderDefaults& d) {
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  // Written unless parsing would derive the same value from hidden_size.
  if (c.hidden_size % c.n_heads != 0 || c.head_dim != c.hidden_size / c.n_heads) {
    j["head_dim"] = c.head_dim;
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j[d.hidden_act_field] = c.hidden_act;
}

}  // namespace ferry::models::detail
