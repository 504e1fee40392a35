#pragma once
// Synthetic checkpoints: a complete model folder (config.json, sharded safetensors with seeded
// random weights, a working byte-level BPE tokenizer.json and tokenizer_config.json) for any
// architecture with a make-model recipe (make_model_architectures()), so demos, tests and
// benchmarks need no download.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/core/bytes.h"
#include "ferry/core/dtype.h"
#include "ferry/models/config.h"

namespace ferry::models {

// Where make_model stands: reported after each tensor is generated, then after each shard file
// is written.
struct MakeModelProgress {
  std::string_view phase;  // "generating" (random weights in memory) or "writing" (shard files)
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;  // all weights as stored
};

struct MakeModelOptions {
  std::string arch = "llama";  // a model type of make_model_architectures(): "llama", "gpt2", ...
  std::optional<Bytes> target_size;  // choose the dimensions for about this many bytes
  // Explicit dimensions; 0 means: from target_size, else a tiny default.
  std::int64_t hidden_size = 0;
  std::int64_t n_layers = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_kv_heads = 0;  // llama: grouped-query heads (0: n_heads / 4 when it divides)
  std::int64_t intermediate_size = 0;
  std::int64_t max_position_embeddings = 0;  // 0: 2048 (llama), 1024 (gpt2)
  bool tie_word_embeddings = false;          // llama only (gpt2 is always tied)
  bool attention_bias = false;               // llama: biases on q/k/v/o
  bool mlp_bias = false;                     // llama: biases in the MLP
  std::string rope_scaling;                  // llama: "", "linear" or "llama3" (factor 2)
  DType dtype = DType::kF32;                 // weights as stored
  std::uint64_t seed = 0;                    // weights and nothing else depend on it
  Bytes max_shard_size{200'000'000};         // shards of at most this size
  int n_merges = 200;                        // BPE merges learned for the tokenizer
  std::function<void(const MakeModelProgress&)> progress;  // optional; called on this thread
};

struct MadeModel {
  ModelConfig config;
  std::uint64_t n_parameters = 0;
  Bytes size;  // bytes of all weights as stored
};

// Writes the folder (created if needed; existing files of the same names are replaced). Throws
// InvalidArgument for an unknown arch or inconsistent dimensions (heads not dividing the
// hidden size), IoError from writing.
MadeModel make_model(const std::filesystem::path& folder, const MakeModelOptions& options);

// The synthetic tokenizer alone: tokenizer.json text, byte-level BPE over 256 byte tokens plus
// `n_merges` merges learned from built-in English text, then the special tokens of `arch`.
std::string make_tokenizer_json(const std::string& arch, int n_merges);

}  // namespace ferry::models
