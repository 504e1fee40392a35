#pragma once
// A model's config.json as one value: the fields the shared building blocks need (sizes, heads,
// rotary, norms, biases, window), read with the architecture's own names (Llama's hidden_size,
// GPT-2's n_embd) and checked for consistency, plus the fields only one architecture reads, in
// that architecture's own struct (ArchitectureFields). Each architecture parses and writes its
// config in its own file (src/models/arch/).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::models {

// Limits parse_config enforces, far above released models, so that a malformed config.json fails
// while parsing instead of allocating, building for minutes or overflowing 64-bit sizes:
// hidden_size, intermediate_size, head counts, head_dim and layer count at most kMaxDimension;
// vocab_size and position counts at most kMaxVocabSize / kMaxPositions; the parameters these
// imply at most kMaxParameters; the file at most kMaxConfigBytes.
inline constexpr std::int64_t kMaxDimension = std::int64_t{1} << 20;
inline constexpr std::int64_t kMaxVocabSize = std::int64_t{1} << 31;
inline constexpr std::int64_t kMaxPositions = std::int64_t{1} << 31;
inline constexpr std::int64_t kMaxParameters = std::int64_t{1} << 48;
inline constexpr std::uint64_t kMaxConfigBytes = std::uint64_t{16} << 20;

// rope_scaling: none, "linear" (positions divided by factor) or "llama3" (per-frequency).
struct RopeScaling {
  std::string type;                                      // "" (none), "linear", "llama3"
  double factor = 1.0;                                   // both types
  double low_freq_factor = 1.0;                          // llama3
  double high_freq_factor = 4.0;                         // llama3
  std::int64_t original_max_position_embeddings = 8192;  // llama3
};

// Base of an architecture's own config fields (Gemma 2's soft-capping, Mixtral's experts): the
// architecture's parser creates them and only its own code reads them.
struct ArchitectureFields {
  virtual ~ArchitectureFields() = default;
};

struct ModelConfig {
  std::string model_type;  // registry key: "llama", "gpt2", "phi3", ... (supported_model_types)
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;              // gpt2: n_embd
  std::int64_t intermediate_size = 0;        // gpt2: n_inner (default 4 * n_embd)
  std::int64_t n_layers = 0;                 // num_hidden_layers / n_layer
  std::int64_t n_heads = 0;                  // num_attention_heads / n_head
  std::int64_t n_kv_heads = 0;               // num_key_value_heads (default n_heads)
  std::int64_t head_dim = 0;                 // head_dim (default hidden_size / n_heads)
  std::int64_t max_position_embeddings = 0;  // gpt2: n_positions
  double norm_eps = 1e-6;                    // rms_norm_eps / layer_norm_epsilon
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;  // gpt2: always tied
  bool attention_bias = false;       // q/k/v/o biases (qwen2: q/k/v only, always)
  bool mlp_bias = false;
  std::string hidden_act = "silu";  // gpt2: activation_function
  // mistral: a token attends only to the last sliding_window positions (itself included);
  // nullopt (or another model_type) attends to all earlier positions.
  std::optional<std::int64_t> sliding_window;
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids;  // eos_token_id: an integer or a list
  std::string torch_dtype;                  // as written ("float32", "bfloat16"), "" when absent
  std::filesystem::path file;               // where it was read from, for error messages
  // The architecture's own fields (null for architectures that have none).
  std::shared_ptr<const ArchitectureFields> fields;
};

// Parses config.json text; `file` names it in errors. Throws InvalidArgument naming the file
// and field for a missing, mistyped, out-of-range or inconsistent field (e.g. hidden_size not
// divisible by num_attention_heads, rms_norm_eps <= 0, a bos/eos id outside [0, vocab_size), a
// size past the limits above), and CorruptFile for text that is not a JSON object or is longer
// than kMaxConfigBytes.
ModelConfig parse_config(std::string_view json_text, const std::filesystem::path& file);
// Reads `path` (config.json, or a folder holding one). Throws IoError when it cannot be read or
// is not a regular file, CorruptFile when it is larger than kMaxConfigBytes.
ModelConfig load_config(const std::filesystem::path& path);
// The config as config.json text (the architecture's own field names), as make-model writes it.
std::string config_to_json(const ModelConfig& config);

}  // namespace ferry::models
