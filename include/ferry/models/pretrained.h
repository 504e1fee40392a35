#pragma once
// The one-call path for a Hugging Face model folder (config.json, safetensors, tokenizer,
// optionally generation_config.json):
//
//   auto model = ferry::load_pretrained(dir, {.device_map = "auto",
//                                             .max_memory = "0=20GiB,cpu=64GiB"});
//   std::string text = model.generate("Hello", {.max_new_tokens = 32});
//
// load_pretrained plans where every layer rests, loads and dispatches (models::load_model);
// generate encodes, generates with the model's eos ids and sampling defaults where the caller
// chose nothing (models::resolve_generate_options), and decodes.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/models/generate.h"
#include "ferry/models/generation_config.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"

namespace ferry::models {

// Every field has its default here and is independent of the others (Note [Options defaults]
// in registry.h), so `{.max_memory = "cpu=8GiB"}` changes only the budgets.
struct PretrainedOptions {
  // "auto", "balanced", "balanced_low_0" or "sequential" (plan under the budgets), or "cpu"
  // (everything in RAM, no hooks).
  std::string device_map = "auto";
  // Budgets per device, as Accelerate's max_memory and `ferry run --max-memory`:
  // "0=20GiB,cpu=64GiB" (plan::MemoryBudget::parse); "": the machine is probed once.
  std::string max_memory;
  // Where converted disk-offloaded weights are written; "": a private temporary folder, removed
  // when the model is destroyed, when one is needed.
  std::filesystem::path offload_folder;
  // The compute dtype, as transformers' torch_dtype: "" or "float32" (the default, whatever the
  // checkpoint stores), "bfloat16", "float16", or "auto" (the checkpoint's). Weights stay in
  // their stored dtype unless this is narrower (Note [Compute dtype]).
  std::string dtype;
  // KV cache tokens per sequence reserved when planning; 0: a 256-token prompt plus
  // max_new_tokens.
  std::int64_t context = 0;
  // Tokens a generate call produces at most, reserved when planning; nullopt: the folder's
  // generation_config.json max_new_tokens, else kDefaultMaxNewTokens.
  std::optional<std::int64_t> max_new_tokens;
  // Weight-only quantization of the decoder blocks' Linear weights at load (Quantization).
  Quantization quantize = Quantization::kNone;
};

// A loaded model with its tokenizer. Movable, not copyable; generate is not thread-safe.
class Pretrained {
 public:
  // The generated text for `prompt` (special tokens skipped), without the prompt. Settings not
  // chosen come from generation_config.json, then config.json (eos ids), then ferry's defaults;
  // the tokenizer's eos id also ends a sequence unless eos ids are chosen (as `ferry run`).
  // Throws what encoding and models::generate throw.
  std::string generate(std::string_view prompt, const GenerationChoices& options = {});

  // The model, its config.json, the generation config applied, the tokenizer and the map.
  CausalLM& model() { return *loaded_.model; }
  const ModelConfig& config() const noexcept { return loaded_.config; }
  const GenerationConfig& generation_config() const noexcept { return loaded_.generation; }
  const Tokenizer& tokenizer() const noexcept { return *tokenizer_; }
  const plan::DeviceMap& device_map() const noexcept { return loaded_.device_map; }
  // The dtype the model computes in.
  DType compute_dtype() const noexcept { return loaded_.compute_dtype; }

 private:
  friend Pretrained load_pretrained(const std::filesystem::path&, const PretrainedOptions&);
  Pretrained(LoadedModel loaded, Tokenizer tokenizer);

  LoadedModel loaded_;
  std::optional<Tokenizer> tokenizer_;  // always set; optional only because Tokenizer has no
                                        // default constructor
};

// Loads the model folder `folder` with its tokenizer. Throws InvalidArgument for an unknown
// device_map (naming the accepted ones), a malformed max_memory or dtype, and what
// models::load_model and Tokenizer::load throw (IoError for a missing folder or file,
// CorruptFile, MissingTensor, OutOfBudget, ...).
Pretrained load_pretrained(const std::filesystem::path& folder,
                           const PretrainedOptions& options = {});

}  // namespace ferry::models

namespace ferry {
// The first names a user reaches for: ferry::load_pretrained(dir, {...}).
using models::load_pretrained;
using models::Pretrained;
using models::PretrainedOptions;
}  // namespace ferry
