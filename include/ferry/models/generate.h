#pragma once
// Text generation with a KV cache: the whole (left-padded) batch of prompts in one prefill,
// then one token per step, until max_new_tokens, an EOS id, a stop string, or the model's
// maximum positions.

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ferry/models/causal_lm.h"
#include "ferry/models/generation_config.h"
#include "ferry/models/sampling.h"

namespace ferry::models {

struct GenerateOptions {
  std::int64_t max_new_tokens = kDefaultMaxNewTokens;  // per prompt
  SamplingOptions sampling;                            // greedy by default
  std::vector<std::int64_t> eos_token_ids;  // a row stops after producing one (it is kept)
  std::vector<std::string> stop_strings;    // a row stops once its decoded text contains one
  // Decodes a row's generated ids; required when stop_strings is not empty.
  std::function<std::string(const std::vector<std::int64_t>&)> decode;
  // Called for every generated token as soon as it is chosen: (row, token id).
  std::function<void(std::size_t row, std::int64_t token)> on_token;
  std::int64_t pad_token_id = 0;    // fills the left padding (never attended to)
  bool keep_prompt_logits = false;  // return the prefill's logits
};

struct GenerateResult {
  std::vector<std::vector<std::int64_t>> tokens;  // generated ids per prompt
  std::vector<std::string> finish_reasons;        // "eos", "stop_string", "length", "max_positions"
  // With keep_prompt_logits: [batch, longest prompt, vocab] float32, an inference tensor (Note
  // [Inference mode] in generate.cpp): read it, or clone() it to change it in place.
  at::Tensor prompt_logits;
  double first_token_seconds = 0;  // prefill until the first token is chosen
  double decode_seconds = 0;       // every later step
  std::int64_t decode_steps = 0;   // steps after the prefill
  // Of decode_seconds, the part in the decode kernels' weight products, how many passes they
  // made and the bytes of weight they read (kernels::product_stats; Note [Where a step's time
  // goes] in src/kernels/gemv.cpp). Zero where the products run elsewhere (CUDA, BLAS).
  double decode_product_seconds = 0;
  std::int64_t decode_product_calls = 0;
  std::int64_t decode_product_bytes = 0;
};

// Generates for `prompts` (token ids; at least one, none empty). Throws InvalidArgument for an
// empty prompt, a token outside the vocabulary, or a prompt longer than the config's
// max_position_embeddings (naming config.json and the field).
GenerateResult generate(CausalLM& model, const std::vector<std::vector<std::int64_t>>& prompts,
                        const GenerateOptions& options = {});

// The prefill step of `prompts` as one batch: left padding (pad_token_id, mask 0), so every
// row's last prompt token sits in the last column; positions count from each row's first token.
StepInput left_padded_prefill(const std::vector<std::vector<std::int64_t>>& prompts,
                              std::int64_t pad_token_id = 0);

// Settings a caller chose explicitly; nullopt: not chosen, so the model's generation config
// (then ferry's default) decides. A CLI sets only the flags that were given.
struct GenerationChoices {
  std::optional<std::int64_t> max_new_tokens;
  std::optional<bool> do_sample;      // false: greedy; true: sample (temperature default 1)
  std::optional<double> temperature;  // 0: greedy; > 0: sample (unless do_sample is false)
  std::optional<std::int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<std::uint64_t> seed;
  // The ids that end a sequence; an empty list never stops early (--ignore-eos).
  std::optional<std::vector<std::int64_t>> eos_token_ids;
  std::vector<std::string> stop_strings;  // a row stops once its decoded text contains one
};

// GenerateOptions for `chosen` over `model` (see the precedence at the top). Sampling happens
// when do_sample (chosen, else the model's) is true, or when only a temperature > 0 was chosen;
// its temperature is the chosen one, else the model's, else 1 (transformers' default). top_k,
// top_p and repetition_penalty fall back to ferry's defaults (0, 1, 1) where neither sets them
// (docs/deviations.md: transformers' top_k default is 50).
GenerateOptions resolve_generate_options(const GenerationConfig& model,
                                         const GenerationChoices& chosen);

}  // namespace ferry::models
