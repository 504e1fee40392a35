#pragma once
// What a checkpoint path means (spec §2.18 checkpoint resolution) and what its headers say,
// without LibTorch and without reading a weight: the tensors' names, dtypes, shapes and files.
// `ferry inspect` and `ferry plan` on headers run on this alone (Note [LibTorch-free base] in
// src/CMakeLists.txt); open_checkpoint (checkpoint.h) opens the same paths for loading.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/tensor_info.h"
#include "ferry/io/safetensors_header.h"

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

// The validated header of the safetensors file at `path`: read with pread (header bytes only),
// then checked as parse_safetensors_header checks it. Throws IoError or CorruptFile naming it.
SafetensorsHeader read_safetensors_header(const std::filesystem::path& path);

struct HeaderTensor {
  TensorInfo info;
  std::filesystem::path file;  // where its bytes are
};

struct CheckpointHeaders {
  CheckpointLocation location;
  std::vector<HeaderTensor> tensors;            // in name order
  std::map<std::string, std::string> metadata;  // the (first) safetensors file's __metadata__
  std::optional<std::uint64_t> index_total_size_bytes;  // a sharded index's metadata.total_size
};

// Resolves `path` and reads every header it names, validated as loading would validate them: a
// sharded index's shards exist and hold the tensors it maps to them (MissingTensor naming the
// tensor and the shard); an offload folder's raw .dat files have exactly their index size (by
// size alone) and its safetensors-backed entries name files inside the folder.
CheckpointHeaders read_checkpoint_headers(const std::filesystem::path& path);

}  // namespace ferry::io
