#pragma once
// Finding what a checkpoint path means (spec §2.18 checkpoint resolution) and opening it as a
// TensorSource: a safetensors file, a sharded index, a folder holding either, or an offload
// folder.

#include <filesystem>
#include <memory>

#include "ferry/io/tensor_source.h"

namespace ferry::io {

enum class CheckpointKind {
  kSafetensors,    // one .safetensors file
  kShardedIndex,   // a *.index.json with its shards
  kOffloadFolder,  // a folder with Accelerate's offload index.json
};

struct CheckpointLocation {
  CheckpointKind kind = CheckpointKind::kSafetensors;
  std::filesystem::path path;  // the file, the index, or the offload folder
};

// A file ending in ".json" is an index ("index.json" itself: an offload folder); another file is
// a safetensors file. A folder resolves to its "model.safetensors", else its only "*.index.json",
// else an "index.json" offload index. Throws InvalidArgument with Accelerate's messages for a
// folder with none or several indexes and for a path that does not exist; Unsupported for a
// PyTorch pickle (".bin") checkpoint. Deliberate difference: a folder holding both
// pytorch_model.bin and model.safetensors resolves to the safetensors file.
CheckpointLocation resolve_checkpoint(const std::filesystem::path& path);

// Resolves `path` and opens it (headers only; shards lazily).
std::shared_ptr<const TensorSource> open_checkpoint(const std::filesystem::path& path);

}  // namespace ferry::io
