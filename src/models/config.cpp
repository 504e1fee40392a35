// config.json parsing. Field names follow transformers' LlamaConfig, MistralConfig, Qwen2Config
// and GPT2Config; defaults are theirs where a field may be absent.
#include "ferry/models/config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

#include "ferry/core/error.h"
#include "io/json_file.h"
#include "io/printable.h"
#include "model_file.h"

namespace ferry::models {
namespace {

using Json = nlohmann::ordered_json;

using detail::shown;

class Reader {
 public:
  // `prefix` names the object in messages ("rope_scaling." for its fields).
  Reader(const Json& j, std::string file, std::string prefix = "")
      : j_(j), file_(std::move(file)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(std::string_view field, std::string_view what) const {
    const std::string path = prefix_ + std::string(field);
    throw InvalidArgument(fmt::format("{}: field '{}' {}", file_, path, what),
                          ErrorFields{.path = path, .file = file_});
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
  // A size: an integer in [1, max].
  std::int64_t size(std::string_view field, std::int64_t max) const {
    return in_range(field, integer(field), max);
  }
  std::int64_t size(std::string_view field, std::int64_t max, std::int64_t fallback) const {
    return has(field) ? size(field, max) : fallback;
  }
  double number(std::string_view field, double fallback) const {
    if (!has(field)) return fallback;
    const Json& v = j_.at(std::string(field));
    if (!v.is_number()) fail(field, fmt::format("must be a number, got {}", shown(v)));
    return v.get<double>();
  }
  // A finite number > 0 (an epsilon, a base, a factor).
  double positive_number(std::string_view field, double fallback) const {
    const double v = number(field, fallback);
    if (!std::isfinite(v) || v <= 0)
      fail(field, fmt::format("must be positive and finite, got {}", v));
    return v;
  }
  bool boolean(std::string_view field, bool fallback) const {
    if (!has(field)) return fallback;
    const Json& v = j_.at(std::string(field));
    if (!v.is_boolean()) fail(field, fmt::format("must be true or false, got {}", shown(v)));
    return v.get<bool>();
  }
  std::string string(std::string_view field, std::string fallback) const {
    if (!has(field)) return fallback;
    const Json& v = j_.at(std::string(field));
    if (!v.is_string()) fail(field, fmt::format("must be a string, got {}", shown(v)));
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
  std::int64_t in_range(std::string_view field, std::int64_t v, std::int64_t max) const {
    if (v <= 0) fail(field, fmt::format("must be positive, got {}", v));
    if (v > max) fail(field, fmt::format("must be at most {}, got {}", max, v));
    return v;
  }

 private:
  std::int64_t integer_at(const Json& v, std::string_view field) const {
    if (!v.is_number_integer()) fail(field, fmt::format("must be an integer, got {}", shown(v)));
    if (v.is_number_unsigned() &&
        v.get<std::uint64_t>() >
            static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(field, fmt::format("must be an integer below 2^63, got {}", shown(v)));
    }
    return v.get<std::int64_t>();
  }
  const Json& j_;
  std::string file_;
  std::string prefix_;
};

void read_llama_family(const Reader& r, ModelConfig& c) {
  c.vocab_size = r.size("vocab_size", kMaxVocabSize);
  c.hidden_size = r.size("hidden_size", kMaxDimension);
  c.intermediate_size = r.size("intermediate_size", kMaxDimension);
  c.n_layers = r.size("num_hidden_layers", kMaxDimension);
  c.n_heads = r.size("num_attention_heads", kMaxDimension);
  c.n_kv_heads = r.size("num_key_value_heads", kMaxDimension, c.n_heads);
  c.max_position_embeddings = r.size("max_position_embeddings", kMaxPositions, 2048);
  c.norm_eps = r.positive_number("rms_norm_eps", 1e-6);
  c.rope_theta = r.positive_number("rope_theta", 10000.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.attention_bias = c.model_type == "qwen2" ? true : r.boolean("attention_bias", false);
  c.mlp_bias = r.boolean("mlp_bias", false);
  c.hidden_act = r.string("hidden_act", "silu");
  // Qwen2 configs carry sliding_window too, but use_sliding_window is off in released models;
  // only Mistral's window is applied.
  if (c.model_type == "mistral" && r.has("sliding_window")) {
    c.sliding_window = r.size("sliding_window", kMaxPositions);
  }
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
  // Every factor divides something (rope_inverse_frequencies in attention.cpp): positive, finite.
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

void read_gpt2(const Reader& r, ModelConfig& c) {
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

// The parameters the sizes imply, an upper bound: every tensor's element count, and their sum
// in bits, must stay far from overflowing 64-bit arithmetic in planning and loading.
double parameter_bound(const ModelConfig& c) {
  const auto d = [](std::int64_t v) { return static_cast<double>(v); };
  const double attention = d(c.hidden_size) * d(c.head_dim) * d(2 * c.n_heads + 2 * c.n_kv_heads);
  const double mlp = 3 * d(c.hidden_size) * d(c.intermediate_size);
  const double positions = c.model_type == "gpt2" ? d(c.max_position_embeddings) : 0;
  return 2 * d(c.vocab_size) * d(c.hidden_size) + positions * d(c.hidden_size) +
         d(c.n_layers) * (attention + mlp);
}

}  // namespace

ModelConfig parse_config(std::string_view json_text, const std::filesystem::path& file) {
  FERRY_CHECK(json_text.size() <= kMaxConfigBytes, CorruptFile,
              "{}: {} bytes, more than a config.json may have ({})", file.string(),
              json_text.size(), kMaxConfigBytes);
  const Json j = io::parse_json(json_text, file.string());
  FERRY_CHECK(j.is_object(), CorruptFile, "{}: expected a JSON object, got {}", file.string(),
              j.type_name());
  const Reader r(j, file.string());
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
  if (const double n = parameter_bound(c); n > static_cast<double>(kMaxParameters)) {
    throw InvalidArgument(
        fmt::format("{}: the sizes (vocabulary {}, hidden {}, intermediate {}, {} layers) imply "
                    "about {:.3g} parameters, more than the {:.3g} ferry accepts",
                    file.string(), c.vocab_size, c.hidden_size, c.intermediate_size, c.n_layers, n,
                    static_cast<double>(kMaxParameters)),
        ErrorFields{.file = file.string(),
                    .expected = fmt::format("<= {}", kMaxParameters),
                    .actual = fmt::format("{:.3g}", n)});
  }
  const auto token_id = [&](const char* field, std::int64_t id) {
    if (id < 0 || id >= c.vocab_size) {
      r.fail(field, fmt::format("{} is outside the vocabulary [0, {})", id, c.vocab_size));
    }
    return id;
  };
  if (r.has("bos_token_id")) c.bos_token_id = token_id("bos_token_id", r.integer("bos_token_id"));
  c.eos_token_ids = r.integers("eos_token_id");
  for (std::int64_t id : c.eos_token_ids) token_id("eos_token_id", id);
  c.torch_dtype = r.string("torch_dtype", "");
  return c;
}

ModelConfig load_config(const std::filesystem::path& path) {
  const std::filesystem::path file =
      std::filesystem::is_directory(path) ? path / "config.json" : path;
  return parse_config(detail::read_model_file(file, kMaxConfigBytes), file);
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
    // Written unless parsing would derive the same value from hidden_size.
    if (c.hidden_size % c.n_heads != 0 || c.head_dim != c.hidden_size / c.n_heads) {
      j["head_dim"] = c.head_dim;
    }
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
