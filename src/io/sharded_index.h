#pragma once
// The text of a sharded checkpoint's "model.safetensors.index.json", parsed without touching
// the file system or LibTorch: what ShardedCheckpoint::open reads, and what the fuzz target
// feeds. Private to io.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry::io {

struct ShardedIndex {
  std::optional<std::uint64_t> total_size_bytes;  // "metadata"."total_size" when present
  // Tensor name → shard file name, in the index's order; each name once.
  std::vector<std::pair<std::string, std::string>> weight_map;
};

// Parses {"metadata": {"total_size": N}, "weight_map": {name: file}} or a flat {name: file} map
// (Accelerate accepts both). Throws CorruptFile naming `file` and the tensor: bad JSON, not an
// object, weight_map not an object, a name listed twice, a shard that is not a string or not a
// relative path inside the index's folder (see is_confined_name).
ShardedIndex parse_sharded_index(std::string_view json, std::string_view file);

}  // namespace ferry::io
