#pragma once
// Writing safetensors files (spec §3.1) as the reference implementation lays them out: tensors
// sorted by dtype alignment (largest first) then name, header padded with spaces so the data is
// 8-byte aligned, "__metadata__" first. The file appears at its path only once complete.

#include <ATen/ATen.h>

#include <cstddef>
#include <filesystem>
#include <map>
#include <span>
#include <string>

#include "ferry/core/tensor_info.h"

namespace ferry::io {

// A tensor given by its stored bytes: for dtypes LibTorch lacks, or bytes already at hand.
struct RawTensor {
  TensorInfo info;
  std::span<const std::byte> bytes;  // info.size_bytes() bytes, row-major, little-endian
};

struct SaveOptions {
  std::map<std::string, std::string> metadata{{"format", "pt"}};  // "__metadata__"; {} omits it
};

// Writes `tensors` (any device, any layout; copied to contiguous CPU memory one at a time) to
// `path` through a temporary file renamed into place. Throws IoError, Unsupported (complex or
// quantized tensors), InvalidArgument (a name that is not valid UTF-8).
void save_safetensors(const std::filesystem::path& path,
                      const std::map<std::string, at::Tensor>& tensors,
                      const SaveOptions& options = {});
// The same for raw tensors. Throws InvalidArgument for a duplicate name or a byte count that
// differs from info.size_bytes().
void save_safetensors(const std::filesystem::path& path, std::span<const RawTensor> tensors,
                      const SaveOptions& options = {});

}  // namespace ferry::io
