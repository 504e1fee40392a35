#pragma once
// A model folder's generation_config.json (transformers' GenerationConfig file): the end-of-
// sequence ids and the sampling defaults generation uses where the caller chose nothing.
// Precedence, for every setting: what the caller chose, else generation_config.json, else
// config.json (eos ids only), else ferry's default (GenerateOptions{}); generate.h resolves it.
// No ATen here: the parser is fuzzed on its own (fuzz/generation_config_fuzz.cpp).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

#include "ferry/models/config.h"

namespace ferry::models {

// max_new_tokens when neither the caller nor generation_config.json sets it.
inline constexpr std::int64_t kDefaultMaxNewTokens = 32;

// The largest generation_config.json parse_generation_config accepts (released ones are < 1 KiB).
inline constexpr std::uint64_t kMaxGenerationConfigBytes = std::uint64_t{1} << 20;
// The most eos ids a generation_config.json may list.
inline constexpr std::size_t kMaxEosTokenIds = 1024;

// The fields ferry applies; nullopt (or empty) where the file does not set them. Other fields
// are ignored.
struct GenerationConfig {
  std::vector<std::int64_t> eos_token_ids;  // eos_token_id: an integer or a list
  std::optional<std::int64_t> pad_token_id;
  std::optional<std::int64_t> max_new_tokens;
  std::optional<bool> do_sample;  // false (or absent): greedy, whatever temperature says
  std::optional<double> temperature;
  std::optional<std::int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::filesystem::path file;  // where it was read from ("" when there was none)
};

// Parses generation_config.json text; `file` names it in errors. Throws CorruptFile for text
// that is not a JSON object or is longer than kMaxGenerationConfigBytes, and InvalidArgument
// naming the file and the field for a mistyped or out-of-range value: a token id that is
// negative or 2^31 or more, more than kMaxEosTokenIds eos ids, max_new_tokens outside
// [0, kMaxPositions], top_k outside [0, kMaxVocabSize], temperature negative or not finite,
// top_p outside (0, 1], min_p outside [0, 1], repetition_penalty not positive and finite. A field set to null counts
// as absent.
GenerationConfig parse_generation_config(std::string_view json_text,
                                         const std::filesystem::path& file);
// `folder`/generation_config.json, or nullopt when the folder has none. Throws IoError when it
// exists but cannot be read or is not a regular file, and what parse_generation_config throws.
std::optional<GenerationConfig> load_generation_config(const std::filesystem::path& folder);

// What generation uses for a model: `file` (when the folder has one) with config.json's eos ids
// where it lists none, as transformers' GenerationConfig.from_model_config does. Throws
// InvalidArgument naming generation_config.json for an eos or pad id outside the model's
// vocabulary.
GenerationConfig model_generation_config(const ModelConfig& config,
                                         const std::optional<GenerationConfig>& file);

// max_new_tokens: the caller's, else the generation config's, else kDefaultMaxNewTokens. The
// one rule: planning (the KV cache reserved, RunShape) and generation use it alike.
std::int64_t resolve_max_new_tokens(const GenerationConfig& model,
                                    std::optional<std::int64_t> chosen);

}  // namespace ferry::models
