#pragma once
// The index.json of an Accelerate offload folder (spec §3.3): each tensor name mapped to
// {"dtype": numpy name, "shape": [...]} of its raw "<name>.dat", or to a tensor inside a
// safetensors file ({"safetensors_file", "weight_name", "dtype"}). The folder itself, and
// writing tensors into it, are in offload_folder.h.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/core/dtype.h"

namespace ferry::io {

// One entry of index.json.
struct OffloadEntry {
  std::string name;                        // tensor name; its file is "<name>.dat"
  std::optional<DType> dtype;              // raw: stored dtype (required); safetensors: target
  std::vector<std::int64_t> shape;         // raw entries only ([] for a 0-dim tensor)
  std::filesystem::path safetensors_file;  // non-empty: read from this file instead of a .dat
  std::string weight_name;                 // the tensor's name in that file (empty: `name`)

  bool in_safetensors() const noexcept { return !safetensors_file.empty(); }
};

// Entries in index order.
using OffloadIndex = std::vector<OffloadEntry>;

// Parses the text of an index.json. Throws CorruptFile naming `file` and the entry: bad JSON, an
// entry without dtype/shape, an unknown dtype name, a name that is not a plain file name.
OffloadIndex parse_offload_index(std::string_view json, std::string_view file);
// Reads "<folder>/index.json"; an empty index when there is none (as Accelerate).
OffloadIndex load_offload_index(const std::filesystem::path& folder);
// Merges `index` into "<folder>/index.json" (existing entries keep their place, new ones are
// appended, same names replaced), written as json.dump(indent=2) would, atomically.
void save_offload_index(const OffloadIndex& index, const std::filesystem::path& folder);

}  // namespace ferry::io
