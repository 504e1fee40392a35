#pragma once
// The shape of a run (sequences, context) and the memory it holds beside the weights: the KV
// cache and the activations of one forward, for the planner to reserve (plan::RuntimeOptions).

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

#include "ferry/models/config.h"
#include "ferry/models/generation_config.h"
#include "ferry/plan/resolve.h"

namespace ferry::models {

// Prompt tokens a run reserves activations for unless its prompts are longer: `ferry plan` and
// `ferry run` then agree for any prompt up to this length.
inline constexpr std::int64_t kPromptAllowance = 256;

struct RunShape {
  std::int64_t batch = 1;  // sequences at once
  // Tokens of KV cache per sequence (prompt + generated); 0: prompt_tokens + max_new_tokens.
  std::int64_t context = 0;
  std::int64_t prompt_tokens = kPromptAllowance;  // the prompt prefilled in one forward
  // Tokens generated per sequence; nullopt: the model's generation_config.json max_new_tokens,
  // else kDefaultMaxNewTokens (load_model and plan_model resolve it with resolve_max_new_tokens,
  // as generation does).
  std::optional<std::int64_t> max_new_tokens;

  // The context reserved: `context`, else prompt + new tokens, at most the model's positions.
  std::int64_t context_tokens(const ModelConfig& config) const;
};

// Bytes of the whole KV cache of `shape` (keys and values of every layer, in `dtype`).
std::uint64_t kv_cache_bytes(const ModelConfig& config, const RunShape& shape,
                             at::ScalarType dtype);
// Bytes of activations alive at once in the largest forward of `shape` (the prefill): hidden
// states, q/k/v, attention scores over the context, the MLP's intermediates and the logits.
// An estimate from the config, documented in docs/design.md.
std::uint64_t activation_bytes(const ModelConfig& config, const RunShape& shape,
                               at::ScalarType dtype);

// The runtime's own host memory beyond its data (LibTorch, allocator, code), measured once on
// this project's machine; reported beside a given CPU budget, reserved from probed RAM.
inline constexpr std::uint64_t kRuntimeFootprintBytes = std::uint64_t{180} << 20;

// RuntimeOptions with the KV cache, activations and footprint of `shape`; streaming fields at
// their defaults (load_checkpoint_and_dispatch takes them from its prefetch options).
plan::RuntimeOptions runtime_needs(const ModelConfig& config, const RunShape& shape,
                                   at::ScalarType dtype);

}  // namespace ferry::models
