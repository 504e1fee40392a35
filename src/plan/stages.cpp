#include "ferry/plan/stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "ferry/core/error.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/no_split.h"

namespace ferry::plan {

// Note [Stage split]
// ~~~~~~~~~~~~~~~~~~
// The model is laid out as one line of bytes: rank 0's ends (embeddings, head) first, then the
// decoder layers in order. Rank r's share of the line ends at the cumulative fraction of the
// capacities up to r; a layer goes to the rank whose share holds the layer's midpoint, so each
// boundary falls at the layer edge nearest the ideal cut. Then ranks left without a layer take
// one from a neighbour (only possible when a capacity is tiny next to the others), keeping the
// ranges contiguous and ordered.
StageSplit split_stages(const std::vector<std::uint64_t>& layer_bytes, std::uint64_t ends_bytes,
                        const std::vector<std::uint64_t>& capacities) {
  const auto ranks = static_cast<std::int64_t>(capacities.size());
  const auto layers = static_cast<std::int64_t>(layer_bytes.size());
  FERRY_CHECK(ranks >= 1, InvalidArgument, "a pipeline needs at least one rank");
  FERRY_CHECK(layers >= ranks, InvalidArgument,
              "a model of {} decoder layer(s) cannot be split over {} ranks (each rank holds at "
              "least one layer)",
              layers, ranks);
  long double total_capacity = 0;
  for (std::int64_t r = 0; r < ranks; ++r) {
    FERRY_CHECK(capacities[static_cast<std::size_t>(r)] > 0, InvalidArgument,
                "rank {} has no memory budget for a pipeline stage", r);
    total_capacity += static_cast<long double>(capacities[static_cast<std::size_t>(r)]);
  }
  long double line = static_cast<long double>(ends_bytes);
  for (std::uint64_t b : layer_bytes) line += static_cast<long double>(b);

  // cut[r]: where rank r's share of the line ends.
  std::vector<long double> cut(static_cast<std::size_t>(ranks));
  long double acc = 0;
  for (std::int64_t r = 0; r < ranks; ++r) {
    acc += static_cast<long double>(capacities[static_cast<std::size_t>(r)]);
    cut[static_cast<std::size_t>(r)] = line * acc / total_capacity;
  }
  std::vector<std::int64_t> owner(static_cast<std::size_t>(layers));
  long double at = static_cast<long double>(ends_bytes);
  std::int64_t rank = 0;
  for (std::int64_t i = 0; i < layers; ++i) {
    const long double size = static_cast<long double>(layer_bytes[static_cast<std::size_t>(i)]);
    const long double mid = at + size / 2;
    while (rank < ranks - 1 && mid >= cut[static_cast<std::size_t>(rank)]) ++rank;
    owner[static_cast<std::size_t>(i)] = rank;
    at += size;
  }
  // Counts per rank, then make every count ≥ 1 by taking from the fullest neighbour side.
  std::vector<std::int64_t> count(static_cast<std::size_t>(ranks), 0);
  for (std::int64_t o : owner) ++count[static_cast<std::size_t>(o)];
  for (std::int64_t r = 0; r < ranks; ++r) {
    while (count[static_cast<std::size_t>(r)] == 0) {
      // The nearest rank with more than one layer gives one; ranges stay contiguous because
      // only counts change.
      std::int64_t donor = -1;
      for (std::int64_t d = 1; d < ranks && donor < 0; ++d) {
        for (std::int64_t c : {r - d, r + d}) {
          if (c >= 0 && c < ranks && count[static_cast<std::size_t>(c)] > 1) {
            donor = c;
            break;
          }
        }
      }
      FERRY_CHECK(donor >= 0, InternalError, "stage split: no layer to give rank {}", r);
      --count[static_cast<std::size_t>(donor)];
      ++count[static_cast<std::size_t>(r)];
    }
  }
  StageSplit split;
  std::int64_t begin = 0;
  for (std::int64_t r = 0; r < ranks; ++r) {
    split.ranges.push_back({begin, begin + count[static_cast<std::size_t>(r)]});
    begin += count[static_cast<std::size_t>(r)];
  }
  return split;
}

std::optional<std::int64_t> layer_of(std::string_view layers_prefix, std::string_view name) {
  if (name.substr(0, layers_prefix.size()) != layers_prefix) return std::nullopt;
  const std::string_view rest = name.substr(layers_prefix.size());
  const std::string_view number = rest.substr(0, rest.find('.'));
  if (number.empty() || number.size() > 9 ||
      !std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(std::string(number));
}

std::uint64_t stage_capacity(const MemoryBudget& budget) {
  std::uint64_t total = 0;
  for (const auto& [placement, bytes] : budget.entries()) {
    if (!placement.is_disk()) total += bytes.value();
  }
  return total;
}

RuntimeOptions stage_runtime(const RuntimeOptions& whole, std::int64_t stage_layers,
                             std::int64_t n_layers) {
  FERRY_ASSERT(n_layers > 0 && stage_layers >= 0 && stage_layers <= n_layers,
               "stage_runtime: {} of {} layers", stage_layers, n_layers);
  RuntimeOptions out = whole;
  out.kv_cache_bytes = whole.kv_cache_bytes / static_cast<std::uint64_t>(n_layers) *
                       static_cast<std::uint64_t>(stage_layers);
  out.kv_cache_layers = static_cast<std::uint64_t>(stage_layers);
  return out;
}

StageSizes stage_sizes(const std::vector<TensorInfo>& tensors) {
  const ModuleTree tree = ModuleTree::from_tensors(tensors);
  StageSizes best;
  std::uint64_t best_bytes = 0;
  for (const std::string& pattern : infer_no_split_patterns(tree)) {
    // "model.layers.*": numbered blocks directly under one module (patterns with a '*' before the
    // last are blocks inside blocks, never the decoder layers).
    if (pattern.size() < 2 || pattern.substr(pattern.size() - 2) != ".*" ||
        pattern.find('*') != pattern.size() - 1) {
      continue;
    }
    StageSizes sizes;
    sizes.layers_prefix = pattern.substr(0, pattern.size() - 1);
    std::uint64_t in_layers = 0;
    for (const TensorInfo& t : tensors) {
      const std::optional<std::int64_t> layer = layer_of(sizes.layers_prefix, t.name);
      if (!layer) continue;
      const auto index = static_cast<std::size_t>(*layer);
      if (index >= sizes.layers.size()) sizes.layers.resize(index + 1, 0);
      sizes.layers[index] += t.size_bytes();
      in_layers += t.size_bytes();
    }
    if (in_layers > best_bytes) {
      best_bytes = in_layers;
      best = std::move(sizes);
    }
  }
  FERRY_CHECK(!best.layers.empty(), Unsupported,
              "the checkpoint has no repeated numbered blocks (such as model.layers.N) to split "
              "into pipeline stages");
  std::uint64_t total = 0;
  for (const TensorInfo& t : tensors) total += t.size_bytes();
  best.ends = total - best_bytes;
  return best;
}

std::string describe(const StageSplit& split) {
  std::string out;
  for (std::size_t r = 0; r < split.ranges.size(); ++r) {
    const StageSplit::Range& range = split.ranges[r];
    if (r > 0) out += "; ";
    out += fmt::format("rank {}: layers {}-{}{}", r, range.begin, range.end - 1,
                       r == 0 ? " (+ embeddings, head)" : "");
  }
  return out;
}

}  // namespace ferry::plan
