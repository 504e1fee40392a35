// config.json parsing. Field names follow transformers' LlamaConfig, MistralConfig, Qwen2Config
// and GPT2Config; defaults are theirs where a field may be absent.
#include "ferry/models/config.h"

#include <nlohmann/json.hpp>

#include "ferry/core/error.h"
#include "io/json_file.h"

namespace ferry::models {
namespace {

using Json = nlohmann::ordered_json;

class Reader {
 public:
  Reader(const Json& j, const std::filesystem::path& file) : j_(j), file_(file.string()) {}

  [[noreturn]] void fail(std::string_view field, std::string_view what) const {
    throw InvalidArgument(fmt::format("{}: field '{}' {}", file_, field, what),
                          ErrorFields{.path = std::string(field), .file = file_});
  }
  bool has(std::string_view field) const {
    auto it = j_.find(field);
    return it != j_.end() && !it->is_null();
  }
  std::int64_t integer(std::string_view field) const {
    if (!has(field)) fail(field, "is missing");
    return integer_at(j_.at(std::string(field)), field);
  }
  std::int64_t integer(std::string_view field, std::int64_t fallback) const {
    return has(field) ? integer(field) : fallback;
  }
  std::int64_t positive(std::string_view field) const {
    const std::int64_t v = integer(field);
    if (v <= 0) fail(field, fmt::format("must be positive, got {}", v));
    return v;
  }
  double number(std::string_view field, double fallback) const {
    if (!has(field)) return fallback;
    const Json& v = j_.at(std::string(field));
    if (!v.is_number()) fail(field, fmt::format("must be a number, got {}", v.dump()));
    return v.get<double>();
  }
  bool boolean(std::string_view field, bool fallback) const {
    if (!has(field)) return fallback;
    const Json& v = j_.at(std::string(field));
    if (!v.is_boolean()) fail(field, fmt::format("must be true or false, got {}", v.dump()));
    return v.get<bool>();
  }
  std::string string(std::string_view field, std::string fallback) const {
    if (!has(field)) return fallback;
    const Json& v = j_.at(std::string(field));
    if (!v.is_string()) fail(field, fmt::format("must be a string, got {}", v.dump()));
    return v.get<std::string>();
  }
  std::vector<std::int64_t> integers(std::string_view field) const {
    if (!has(field)) return {};
    const Json& v = j_.at(std::string(field));
    if (!v.is_array()) return {integer_at(v, field)};
    std::vector<std::int64_t> out;
    for (const Json& e : v) out.push_back(integer_at(e, field));
    return out;
  }
  const Json& json() const { return j_; }
  const std::string& file() const { return file_; }

 private:
  std::int64_t integer_at(const Json& v, std::string_view field) const {
    if (!v.is_number_integer()) fail(field, fmt::format("must be an integer, got {}", v.dump()));
    return v.get<std::int64_t>();
  }
  const Json& j_;
  std::string file_;
};

void read_llama_family(const Reader& r, ModelConfig& c) {
  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.n_layers = r.positive("num_hidden_layers");
  c.n_heads = r.positive("num_attention_heads");
  c.n_kv_heads = r.integer("num_key_value_heads", c.n_heads);
  c.max_position_embeddings = r.integer("max_position_embeddings", 2048);
  c.norm_eps = r.number("rms_norm_eps", 1e-6);
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.attention_bias = c.model_type == "qwen2" ? true : r.boolean("attention_bias", false);
  c.mlp_bias = r.boolean("mlp_bias", false);
  c.hidden_act = r.string("hidden_act", "silu");
  // Qwen2 configs carry sliding_window too, but use_sliding_window is off in released models;
  // only Mistral's window is applied.
  if (c.model_type == "mistral" && r.has("sliding_window")) {
    c.sliding_window = r.positive("sliding_window");
  }
  if (r.has("head_dim")) {
    c.head_dim = r.positive("head_dim");
  } else {
    if (c.hidden_size % c.n_heads != 0) {
      r.fail("num_attention_heads",
             fmt::format("({}) must divide hidden_size ({})", c.n_heads, c.hidden_size));
    }
    c.head_dim = c.hidden_size / c.n_heads;
  }
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0) {
    r.fail("num_key_value_heads",
           fmt::format("({}) must be positive and divide num_attention_heads ({})", c.n_kv_heads,
                       c.n_heads));
  }
  if (c.head_dim % 2 != 0) r.fail("head_dim", fmt::format("must be even, got {}", c.head_dim));
  if (!r.has("rope_scaling")) return;
  const Json& s = r.json().at("rope_scaling");
  if (!s.is_object()) r.fail("rope_scaling", "must be an object or null");
  const Reader sr(s, r.file());
  std::string type = sr.string("rope_type", sr.string("type", ""));
  if (type == "default") return;
  if (type != "linear" && type != "llama3") {
    r.fail("rope_scaling.rope_type",
           fmt::format("'{}' is not supported (supported: linear, llama3)", type));
  }
  c.rope_scaling.type = type;
  c.rope_scaling.factor = sr.number("factor", 1.0);
  if (c.rope_scaling.factor <= 0) r.fail("rope_scaling.factor", "must be positive");
  if (type == "llama3") {
    c.rope_scaling.low_freq_factor = sr.number("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = sr.number("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        sr.integer("original_max_position_embeddings", 8192);
    if (c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor) {
      r.fail("rope_scaling.high_freq_factor", "must be greater than low_freq_factor");
    }
  }
}

void read_gpt2(const Reader& r, ModelConfig& c) {
  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("n_embd");
  c.n_layers = r.positive("n_layer");
  c.n_heads = r.positive("n_head");
  c.n_kv_heads = c.n_heads;
  c.max_position_embeddings = r.positive("n_positions");
  c.intermediate_size = r.integer("n_inner", 4 * c.hidden_size);
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  c.hidden_act = r.string("activation_function", "gelu_new");
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  c.mlp_bias = true;
  if (c.hidden_size % c.n_heads != 0) {
    r.fail("n_head", fmt::format("({}) must divide n_embd ({})", c.n_heads, c.hidden_size));
  }
  c.head_dim = c.hidden_size / c.n_heads;
}

}  // namespace

ModelConfig parse_config(std::string_view json_text, const std::filesystem::path& file) {
  const Json j = io::parse_json(json_text, file.string());
  FERRY_CHECK(j.is_object(), CorruptFile, "{}: expected a JSON object, got {}", file.string(),
              j.type_name());
  const Reader r(j, file);
  ModelConfig c;
  c.file = file;
  c.model_type = r.string("model_type", "");
  if (c.model_type.empty()) r.fail("model_type", "is missing");
  if (c.model_type == "gpt2") {
    read_gpt2(r, c);
  } else {
    // Unknown types are rejected by the registry, which knows what is supported.
    read_llama_family(r, c);
  }
  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id");
  c.eos_token_ids = r.integers("eos_token_id");
  c.torch_dtype = r.string("torch_dtype", "");
  for (std::int64_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      r.fail("eos_token_id", fmt::format("{} is outside the vocabulary [0, {})", id, c.vocab_size));
    }
  }
  return c;
}

ModelConfig load_config(const std::filesystem::path& path) {
  const std::filesystem::path file =
      std::filesystem::is_directory(path) ? path / "config.json" : path;
  return parse_config(io::read_text_file(file), file);
}

std::string config_to_json(const ModelConfig& c) {
  Json j;
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  if (c.model_type == "gpt2") {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.n_layers;
    j["n_head"] = c.n_heads;
    j["n_positions"] = c.max_position_embeddings;
    j["n_inner"] = c.intermediate_size;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = c.hidden_act;
  } else {
    j["architectures"] = {c.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                          : c.model_type == "mistral" ? "MistralForCausalLM"
                                                      : "LlamaForCausalLM"};
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_hidden_layers"] = c.n_layers;
    j["num_attention_heads"] = c.n_heads;
    j["num_key_value_heads"] = c.n_kv_heads;
    if (c.head_dim != c.hidden_size / c.n_heads) j["head_dim"] = c.head_dim;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["rms_norm_eps"] = c.norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
    j["hidden_act"] = c.hidden_act;
    if (c.model_type == "mistral") {
      j["sliding_window"] = c.sliding_window ? Json(*c.sliding_window) : Json(nullptr);
    }
    if (c.rope_scaling.type.empty()) {
      j["rope_scaling"] = nullptr;
    } else {
      Json s{{"rope_type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor}};
      if (c.rope_scaling.type == "llama3") {
        s["low_freq_factor"] = c.rope_scaling.low_freq_factor;
        s["high_freq_factor"] = c.rope_scaling.high_freq_factor;
        s["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
      }
      j["rope_scaling"] = s;
    }
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  return j.dump(2) + "\n";
}

}  // namespace ferry::models
