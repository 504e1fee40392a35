#pragma once
// Opening a checkpoint path (resolved as checkpoint_headers.h says) as a TensorSource: a
// safetensors file, a sharded index, a folder holding either, or an offload folder.

#include <filesystem>
#include <memory>

#include "ferry/io/checkpoint_headers.h"
#include "ferry/io/tensor_source.h"

namespace ferry::io {

// Resolves `path` and opens it (headers only; shards lazily).
std::shared_ptr<const TensorSource> open_checkpoint(const std::filesystem::path& path);

}  // namespace ferry::io
