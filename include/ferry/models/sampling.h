#pragma once
// Choosing the next token from logits: greedy, or sampling with temperature, top-k, top-p, min-p,
// a repetition penalty and a seed (transformers' logits processors, in their order).

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace ferry::models {

struct SamplingOptions {
  double temperature = 0.0;         // 0: greedy (argmax); > 0: sample from softmax(logits / t)
  std::int64_t top_k = 0;           // keep the k most likely tokens (0: all)
  double top_p = 1.0;               // keep the smallest set whose probability reaches p (1: all)
  double min_p = 0.0;  // keep tokens at least min_p × the top token's probability (0: all)
  double repetition_penalty = 1.0;  // > 1 discourages tokens already in the sequence
  std::uint64_t seed = 0;           // the sampler's random generator seed
};

// Stateful (its random generator advances); one per generation. Not thread-safe.
class Sampler {
 public:
  // Throws InvalidArgument for a negative temperature or top_k, top_p outside (0, 1], min_p
  // outside [0, 1], or a repetition penalty <= 0.
  explicit Sampler(const SamplingOptions& options);
  // The next token of each row: `logits` [batch, vocab] float32, `seen[b]` the tokens row b has
  // seen so far (for the repetition penalty). Returns [batch] int64.
  at::Tensor next(at::Tensor logits, const std::vector<std::vector<std::int64_t>>& seen);

 private:
  SamplingOptions options_;
  at::Generator generator_;
};

}  // namespace ferry::models
