#pragma once
// What generation needs from any architecture: a module tree to load and dispatch, its config,
// the class name of its decoder block (its no-split class), and logits for a step.

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ferry/models/config.h"
#include "ferry/models/kv_cache.h"
#include "ferry/nn/module.h"

namespace ferry::models {

// One forward step of a batch. Padding is on the left.
struct StepInput {
  at::Tensor input_ids;       // [batch, tokens] int64: the new tokens of this step
  at::Tensor position_ids;    // [batch, tokens] int64: their positions (padding excluded)
  at::Tensor attention_mask;  // [batch, cached + tokens] int64: 1 = real token, 0 = padding
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  // The root of the module tree; its tensor paths are the checkpoint's tensor names.
  virtual nn::Module& module() = 0;
  virtual const ModelConfig& config() const = 0;
  // The decoder block's class name ("LlamaDecoderLayer", "GPT2Block"): never split by planning.
  virtual std::string decoder_layer_class() const = 0;
  // The classes planning never splits: the decoder block by default; finer units where the
  // architecture wants them placed on their own (Mixtral: attention and each expert).
  virtual std::vector<std::string> no_split_classes() const { return {decoder_layer_class()}; }
  // Classes whose modules run only for some inputs (Mixtral's routed experts): an offloaded one is
  // loaded when it is called and never prefetched on a guess (Note [Routed experts]).
  virtual std::vector<std::string> on_demand_classes() const { return {}; }
  // Runs one step and appends its keys and values to `cache` (which must have one layer per
  // decoder layer). Returns float32 logits [batch, tokens, vocab] on the CPU.
  virtual at::Tensor step(const StepInput& input, KvCache& cache) = 0;

  // ---- pipeline stages (Note [Pipeline stages] in src/models/blocks/decoder.cpp) -------------
  // The step in three parts, so that ranks can each hold and run a contiguous range of decoder
  // layers: step(in, cache) == head(layers(embed(in), in, cache, 0, n_layers)). Each part runs
  // through its modules' hooks; hidden states come back on the device the part ran on.
  // Architectures that cannot be split throw Unsupported naming themselves.
  struct StageParts {
    std::vector<std::string> first;   // module paths that make the hidden states (embeddings)
    std::vector<std::string> layers;  // each decoder layer's path, in order
    std::vector<std::string> last;    // module paths that make logits (final norm, head)
  };
  virtual StageParts stage_parts() const;
  // Hidden states [batch, tokens, hidden] in the compute dtype.
  virtual at::Tensor embed(const StepInput& input);
  // Runs decoder layers [begin, end) on `hidden`, appending to their caches.
  virtual at::Tensor layers(const at::Tensor& hidden, const StepInput& input, KvCache& cache,
                            std::int64_t begin, std::int64_t end);
  // Float32 logits [batch, tokens, vocab] on the CPU, as step returns them.
  virtual at::Tensor head(const at::Tensor& hidden);
};

}  // namespace ferry::models
