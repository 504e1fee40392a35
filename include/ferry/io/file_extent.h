#pragma once
// Where a stored tensor's bytes lie in a file: what a reader that bypasses the mapping (pread,
// O_DIRECT) needs to fetch them itself. TensorSource::extent() gives it.

#include <cstdint>
#include <filesystem>
#include <vector>

#include "ferry/core/dtype.h"

namespace ferry::io {

// Where a stored tensor's bytes lie in a file.
struct FileExtent {
  std::filesystem::path file;
  std::uint64_t offset = 0;         // of the tensor's first byte in the file
  std::uint64_t length = 0;         // stored bytes
  DType dtype = DType::kU8;         // stored dtype of those bytes (not a target dtype)
  std::vector<std::int64_t> shape;  // stored shape ([] for a scalar)
};

}  // namespace ferry::io
