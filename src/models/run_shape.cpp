#include "ferry/models/run_shape.h"

#include <algorithm>

namespace ferry::models {
namespace {

std::uint64_t u(std::int64_t v) { return static_cast<std::uint64_t>(std::max<std::int64_t>(v, 0)); }

}  // namespace

std::int64_t RunShape::context_tokens(const ModelConfig& config) const {
  const std::int64_t wanted =
      context > 0 ? context : prompt_tokens + max_new_tokens.value_or(kDefaultMaxNewTokens);
  return config.max_position_embeddings > 0 ? std::min(wanted, config.max_position_embeddings)
                                            : wanted;
}

std::uint64_t kv_cache_bytes(const ModelConfig& config, const RunShape& shape,
                             at::ScalarType dtype) {
  const std::uint64_t e = at::elementSize(dtype);
  const std::int64_t kv_heads = config.n_kv_heads > 0 ? config.n_kv_heads : config.n_heads;
  return 2 * u(config.n_layers) * u(shape.batch) * u(shape.context_tokens(config)) * u(kv_heads) *
         u(config.head_dim) * e;
}

std::uint64_t activation_bytes(const ModelConfig& config, const RunShape& shape,
                               at::ScalarType dtype) {
  const std::uint64_t e = at::elementSize(dtype);
  const std::uint64_t rows =
      u(shape.batch) * u(std::min(shape.prompt_tokens, shape.context_tokens(config)));
  const std::int64_t kv_heads = config.n_kv_heads > 0 ? config.n_kv_heads : config.n_heads;
  const std::uint64_t per_row = 4 * u(config.hidden_size) +                         // residual, norms
                                u(config.n_heads + 2 * kv_heads) * u(config.head_dim) +  // q, k, v
                                3 * u(config.intermediate_size);                     // mlp
  const std::uint64_t scores = 2 * u(config.n_heads) * rows * u(shape.context_tokens(config));
  const std::uint64_t logits = rows * u(config.vocab_size) * std::max<std::uint64_t>(e, 4);
  return rows * per_row * e + scores * e + logits;
}

plan::RuntimeOptions runtime_needs(const ModelConfig& config, const RunShape& shape,
                                   at::ScalarType dtype) {
  return plan::RuntimeOptions{.kv_cache_bytes = kv_cache_bytes(config, shape, dtype),
                              .kv_cache_layers = u(config.n_layers),
                              .activation_bytes = activation_bytes(config, shape, dtype),
                              .footprint_bytes = kRuntimeFootprintBytes};
}

}  // namespace ferry::models
