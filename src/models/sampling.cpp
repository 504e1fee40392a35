#include "ferry/models/sampling.h"

#include <ATen/CPUGeneratorImpl.h>

#include <limits>

#include "ferry/core/error.h"

namespace ferry::models {

Sampler::Sampler(const SamplingOptions& options)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(options.seed)) {
  FERRY_CHECK(options.temperature >= 0, InvalidArgument,
              "temperature must be >= 0 (0 is greedy), got {}", options.temperature);
  FERRY_CHECK(options.top_k >= 0, InvalidArgument, "top_k must be >= 0 (0 keeps all), got {}",
              options.top_k);
  FERRY_CHECK(options.top_p > 0 && options.top_p <= 1, InvalidArgument,
              "top_p must be in (0, 1], got {}", options.top_p);
  FERRY_CHECK(options.min_p >= 0 && options.min_p <= 1, InvalidArgument,
              "min_p must be in [0, 1], got {}", options.min_p);
  FERRY_CHECK(options.repetition_penalty > 0, InvalidArgument,
              "repetition_penalty must be > 0, got {}", options.repetition_penalty);
}

at::Tensor Sampler::next(at::Tensor logits, const std::vector<std::vector<std::int64_t>>& seen) {
  logits = logits.to(at::kFloat).clone();
  const std::int64_t vocab = logits.size(-1);
  if (options_.repetition_penalty != 1.0) {
    // transformers' RepetitionPenaltyLogitsProcessor: divide positive scores, multiply negative.
    for (std::size_t b = 0; b < seen.size(); ++b) {
      at::Tensor row_tensor = logits[static_cast<std::int64_t>(b)];
      auto row = row_tensor.accessor<float, 1>();
      std::vector<bool> done(static_cast<std::size_t>(vocab), false);
      for (std::int64_t id : seen[b]) {
        if (id < 0 || id >= vocab || done[static_cast<std::size_t>(id)]) continue;
        done[static_cast<std::size_t>(id)] = true;
        const float s = row[id];
        row[id] = s < 0 ? s * static_cast<float>(options_.repetition_penalty)
                        : s / static_cast<float>(options_.repetition_penalty);
      }
    }
  }
  if (options_.temperature == 0.0) return logits.argmax(-1);
  logits = logits / options_.temperature;
  const float lowest = -std::numeric_limits<float>::infinity();
  if (options_.top_k > 0 && options_.top_k < vocab) {
    const at::Tensor kth =
        std::get<0>(logits.topk(options_.top_k, -1)).narrow(-1, options_.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, lowest);
  }
  if (options_.top_p < 1.0) {
    // transformers' TopPLogitsWarper: drop the low tail whose mass is at most 1 - top_p,
    // always keeping the most likely token.
    auto [sorted, order] = logits.sort(-1, /*descending=*/false);
    const at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    at::Tensor remove_sorted = cumulative <= (1.0 - options_.top_p);
    remove_sorted.narrow(-1, vocab - 1, 1).fill_(false);
    const at::Tensor remove = remove_sorted.scatter(-1, order, remove_sorted);
    logits = logits.masked_fill(remove, lowest);
  }
  if (options_.min_p > 0.0) {
    // transformers' MinPLogitsWarper: drop tokens less likely than min_p times the most likely
    // one (which always stays), after temperature, top-k and top-p.
    const at::Tensor probs = logits.softmax(-1);
    const at::Tensor floor = std::get<0>(probs.max(-1, /*keepdim=*/true)) * options_.min_p;
    logits = logits.masked_fill(probs < floor, lowest);
  }
  const at::Tensor probs = logits.softmax(-1);
  return at::multinomial(probs, 1, /*replacement=*/false, generator_).squeeze(-1);
}

}  // namespace ferry::models
