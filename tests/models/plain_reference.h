#pragma once
// A plain reference for the architectures added after tools/reference_logits.py (Phi-3, Gemma 2,
// Mixtral): a functional forward written with ATen ops from transformers' model definitions,
// independent of ferry's modules, blocks and config parser — it reads config.json itself and
// the weights by their checkpoint names, recomputes the whole sequence at every step (no cache)
// in float32, and knows nothing of devices, hooks or placement.

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <vector>

namespace ferry::models::testing {

// Logits [tokens, vocab] (float32) of `ids` run from scratch through the model in `folder`.
at::Tensor plain_logits(const std::filesystem::path& folder, const std::vector<std::int64_t>& ids);

// The greedy continuation of `ids`: `n` tokens, each from a full recomputation.
std::vector<std::int64_t> plain_greedy(const std::filesystem::path& folder,
                                       std::vector<std::int64_t> ids, std::int64_t n);

}  // namespace ferry::models::testing
