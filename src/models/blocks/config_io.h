#pragma once
// Reading and writing config.json fields (private to models): a checked reader that names the
// file and field in every error, shared by every architecture's config parser.

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/models/config.h"
#include "models/model_file.h"

namespace ferry::models::detail {

using Json = nlohmann::ordered_json;

// A JSON object read field by field; every failure is InvalidArgument
// "<file>: field '<prefix><name>' ..." naming the file and the field.
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
  // An array of positive finite numbers (a rotary scaling's per-frequency factors).
  std::vector<double> positive_numbers(std::string_view field) const {
    if (!has(field)) fail(field, "is missing");
    const Json& v = j_.at(std::string(field));
    if (!v.is_array()) fail(field, fmt::format("must be an array of numbers, got {}", shown(v)));
    std::vector<double> out;
    for (const Json& e : v) {
      if (!e.is_number() || !std::isfinite(e.get<double>()) || e.get<double>() <= 0) {
        fail(field, fmt::format("must hold positive finite numbers, got {}", shown(e)));
      }
      out.push_back(e.get<double>());
    }
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

// Defaults of the decoder fields where config.json may omit them (each architecture's config
// class has its own).
struct DecoderDefaults {
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::string hidden_act = "silu";
  const char* hidden_act_field = "hidden_act";
};

// The sizes every Llama-like config has, with transformers' names: vocab_size, hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
// max_position_embeddings, rms_norm_eps, rope_theta, tie_word_embeddings and the activation;
// checks that the heads divide (hidden_size by heads unless head_dim is given, heads by key/value
// heads) and that head_dim is even.
void read_decoder_fields(const Reader& r, ModelConfig& c, const DecoderDefaults& defaults = {});
// Writes the fields read_decoder_fields reads (head_dim only when it is not derived).
void write_decoder_fields(const ModelConfig& c, Json& j, const DecoderDefaults& defaults = {});

}  // namespace ferry::models::detail
