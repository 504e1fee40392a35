// generation_config.json parsing. Field names and meanings are transformers' GenerationConfig;
// only the fields ferry applies are read, every one checked, so that a bad file fails here and
// not as a nonsensical sampler or an endless generation.
#include "ferry/models/generation_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

#include "ferry/core/error.h"
#include "io/json_file.h"
#include "model_file.h"

namespace ferry::models {
namespace {

using Json = nlohmann::ordered_json;
using detail::shown;

// Token ids are 32-bit in Hugging Face files; the model's vocabulary bounds them further in
// model_generation_config.
constexpr std::int64_t kMaxTokenId = (std::int64_t{1} << 31) - 1;

class Fields {
 public:
  Fields(const Json& j, std::string file) : j_(j), file_(std::move(file)) {}

  [[noreturn]] void fail(std::string_view field, std::string_view what) const {
    throw InvalidArgument(fmt::format("{}: field '{}' {}", file_, field, what),
                          ErrorFields{.path = std::string(field), .file = file_});
  }
  const Json* find(std::string_view field) const {
    auto it = j_.find(field);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<std::int64_t> integer(std::string_view field, std::int64_t min,
                                      std::int64_t max) const {
    const Json* v = find(field);
    if (v == nullptr) return std::nullopt;
    return integer_at(*v, field, min, max);
  }
  std::optional<double> number(std::string_view field) const {
    const Json* v = find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) fail(field, fmt::format("must be a number, got {}", shown(*v)));
    const double d = v->get<double>();
    if (!std::isfinite(d)) fail(field, fmt::format("must be finite, got {}", d));
    return d;
  }
  std::optional<bool> boolean(std::string_view field) const {
    const Json* v = find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) fail(field, fmt::format("must be true or false, got {}", shown(*v)));
    return v->get<bool>();
  }
  // An integer or a list of integers (eos_token_id).
  std::vector<std::int64_t> token_ids(std::string_view field) const {
    const Json* v = find(field);
    if (v == nullptr) return {};
    if (!v->is_array()) return {integer_at(*v, field, 0, kMaxTokenId)};
    if (v->size() > kMaxEosTokenIds) {
      fail(field, fmt::format("lists {} ids, more than {}", v->size(), kMaxEosTokenIds));
    }
    std::vector<std::int64_t> out;
    out.reserve(v->size());
    for (const Json& e : *v) out.push_back(integer_at(e, field, 0, kMaxTokenId));
    return out;
  }

 private:
  std::int64_t integer_at(const Json& v, std::string_view field, std::int64_t min,
                          std::int64_t max) const {
    if (!v.is_number_integer()) fail(field, fmt::format("must be an integer, got {}", shown(v)));
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
      fail(field, fmt::format("must be in [{}, {}], got {}", min, max, shown(v)));
    }
    const std::int64_t i = v.get<std::int64_t>();
    if (i < min || i > max) fail(field, fmt::format("must be in [{}, {}], got {}", min, max, i));
    return i;
  }
  const Json& j_;
  std::string file_;
};

}  // namespace

GenerationConfig parse_generation_config(std::string_view json_text,
                                         const std::filesystem::path& file) {
  FERRY_CHECK(json_text.size() <= kMaxGenerationConfigBytes, CorruptFile,
              "{}: {} bytes, more than a generation_config.json may have ({})", file.string(),
              json_text.size(), kMaxGenerationConfigBytes);
  const Json j = io::parse_json(json_text, file.string());
  FERRY_CHECK(j.is_object(), CorruptFile, "{}: expected a JSON object, got {}", file.string(),
              j.type_name());
  const Fields f(j, file.string());
  GenerationConfig g;
  g.file = file;
  g.eos_token_ids = f.token_ids("eos_token_id");
  g.pad_token_id = f.integer("pad_token_id", 0, kMaxTokenId);
  g.max_new_tokens = f.integer("max_new_tokens", 0, kMaxPositions);
  g.do_sample = f.boolean("do_sample");
  g.temperature = f.number("temperature");
  if (g.temperature && *g.temperature < 0) {
    f.fail("temperature", fmt::format("must be 0 or more, got {}", *g.temperature));
  }
  g.top_k = f.integer("top_k", 0, kMaxVocabSize);
  g.min_p = f.number("min_p");
  if (g.min_p && !(*g.min_p >= 0 && *g.min_p <= 1)) {
    f.fail("min_p", fmt::format("must be in [0, 1], got {}", *g.min_p));
  }
  g.top_p = f.number("top_p");
  if (g.top_p && !(*g.top_p > 0 && *g.top_p <= 1)) {
    f.fail("top_p", fmt::format("must be in (0, 1], got {}", *g.top_p));
  }
  g.repetition_penalty = f.number("repetition_penalty");
  if (g.repetition_penalty && *g.repetition_penalty <= 0) {
    f.fail("repetition_penalty", fmt::format("must be positive, got {}", *g.repetition_penalty));
  }
  return g;
}

std::optional<GenerationConfig> load_generation_config(const std::filesystem::path& folder) {
  const std::filesystem::path file = folder / "generation_config.json";
  std::error_code error;
  // symlink_status: a dangling link is a file that exists but cannot be read (IoError below).
  if (!std::filesystem::exists(std::filesystem::symlink_status(file, error))) return std::nullopt;
  return parse_generation_config(detail::read_model_file(file, kMaxGenerationConfigBytes), file);
}

GenerationConfig model_generation_config(const ModelConfig& config,
                                         const std::optional<GenerationConfig>& file) {
  GenerationConfig g = file.value_or(GenerationConfig{});
  const auto check = [&](const char* field, std::int64_t id) {
    if (id >= config.vocab_size) {
      throw InvalidArgument(
          fmt::format("{}: field '{}' {} is outside the vocabulary [0, {}) of {}", g.file.string(),
                      field, id, config.vocab_size, config.file.string()),
          ErrorFields{.path = field,
                      .file = g.file.string(),
                      .expected = fmt::format("< {}", config.vocab_size),
                      .actual = std::to_string(id)});
    }
  };
  for (const std::int64_t id : g.eos_token_ids) check("eos_token_id", id);
  if (g.pad_token_id) check("pad_token_id", *g.pad_token_id);
  if (g.eos_token_ids.empty()) g.eos_token_ids = config.eos_token_ids;
  return g;
}

std::int64_t resolve_max_new_tokens(const GenerationConfig& model,
                                    std::optional<std::int64_t> chosen) {
  return chosen.value_or(model.max_new_tokens.value_or(kDefaultMaxNewTokens));
}

}  // namespace ferry::models
