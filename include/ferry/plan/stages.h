#pragma once
// Pipeline stages (issue 16): which contiguous range of decoder layers each rank holds, in
// proportion to its memory. Pure: sizes and capacities in, ranges out, O(layers + ranks).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/core/tensor_info.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/resolve.h"

namespace ferry::plan {

struct StageSplit {
  // Per rank: decoder layers [begin, end). Rank 0 also holds the embeddings and the head.
  struct Range {
    std::int64_t begin = 0;
    std::int64_t end = 0;
    bool operator==(const Range&) const = default;
  };
  std::vector<Range> ranges;
  bool operator==(const StageSplit&) const = default;
};

// Splits layers (their sizes in bytes, in order) over ranks in proportion to `capacities` (each
// rank's memory budget in bytes, GPUs and CPU together; disk is not counted). Rank 0's share
// includes `ends_bytes` (embeddings, final norm, head), so it gets fewer layers when those are
// large. Every rank gets at least one layer. Throws InvalidArgument when there are fewer layers
// than ranks, no rank, or a capacity of zero (naming the rank).
StageSplit split_stages(const std::vector<std::uint64_t>& layer_bytes, std::uint64_t ends_bytes,
                        const std::vector<std::uint64_t>& capacities);

// What a split weighs, from a checkpoint's tensor headers alone (so `ferry plan --world-size` and
// a distributed run split alike): the decoder layers are the repeated numbered blocks
// (infer_no_split_patterns; the one with the most bytes when there are several), each layer's
// bytes as stored; everything else is the ends.
struct StageSizes {
  std::string layers_prefix;          // "model.layers."
  std::vector<std::uint64_t> layers;  // bytes of layer 0, 1, ...
  std::uint64_t ends = 0;
};
// Throws Unsupported when the tensors have no repeated numbered blocks.
StageSizes stage_sizes(const std::vector<TensorInfo>& tensors);

// The decoder layer a tensor belongs to: "model.layers.3.mlp.up_proj.weight" under the prefix
// "model.layers." is layer 3; nullopt for a tensor of the ends. stage_sizes counts by it, and
// `ferry plan --world-size` gives each rank the tensors of its layers by it.
std::optional<std::int64_t> layer_of(std::string_view layers_prefix, std::string_view name);

// A rank's capacity for split_stages: its budgets in bytes, GPUs and CPU together, disk not
// counted. A distributed run (engine::stage_capacity) and `ferry plan --world-size` both ask this.
std::uint64_t stage_capacity(const MemoryBudget& budget);

// What a rank holding `stage_layers` of the model's `n_layers` decoder layers reserves at run
// time: the KV cache of its own layers only (each layer's share of the whole cache, as
// models::runtime_needs sizes it); the rest as `whole`.
RuntimeOptions stage_runtime(const RuntimeOptions& whole, std::int64_t stage_layers,
                             std::int64_t n_layers);

// "rank 0: layers 0-11 (+ embeddings, head); rank 1: layers 12-23".
std::string describe(const StageSplit& split);

}  // namespace ferry::plan
