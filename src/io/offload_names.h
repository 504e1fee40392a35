#pragma once
// Names in offload folders: numpy dtype names of index.json and the file-name rule for tensors.

#include <filesystem>
#include <optional>
#include <string_view>

#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/io/offload_index.h"

namespace ferry::io {

// The index.json dtype name: numpy's ("float32", "int64", "bool"), "bfloat16" for bfloat16.
std::string_view offload_dtype_name(DType d);
// Parses such a name (also with a "torch." prefix, as transformers writes); nullopt if unknown.
std::optional<DType> dtype_from_offload_name(std::string_view name);
// A tensor name usable as "<name>.dat" inside the folder: not empty, no '/', not "." or "..".
bool is_plain_name(std::string_view name);

// The error for an index entry whose safetensors_file names a file outside its folder (Note
// [Offload index paths] in offload_folder.cpp).
CorruptFile escaping_safetensors_file(const OffloadEntry& entry,
                                      const std::filesystem::path& index_path);

// The index of the offload folder `folder`, as both readers of offload folders open it: an
// IoError naming index.json when the folder has none (it is not an offload folder), then
// load_offload_index, and every safetensors_file a plain name inside the folder (Note [Offload
// index paths]; symlinks are checked when the file is opened).
OffloadIndex open_offload_index(const std::filesystem::path& folder);

}  // namespace ferry::io
