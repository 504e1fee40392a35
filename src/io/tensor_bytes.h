#pragma once
// Turning stored bytes into LibTorch tensors, shared by every reader: the zero-copy view, the
// one copy, and the explicit dtype/device conversion of LoadOptions.

#include <ATen/ATen.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

#include "ferry/core/tensor_info.h"
#include "ferry/io/load_options.h"
#include "io/mapped_file.h"

namespace ferry::io {

// The tensor described by `info` whose stored bytes are `bytes` (exactly info.size_bytes()),
// converted per `options`. With `owner` set and `bytes` writable (a private mapping), a CPU
// tensor of the stored dtype is a view that keeps `owner` alive; without an owner, or when the
// address is not aligned to the element size, the bytes are copied once. `file` names the
// source in errors. Throws Unsupported where LibTorch has no scalar type for info.dtype.
at::Tensor tensor_from_bytes(std::span<std::byte> bytes, const TensorInfo& info,
                             std::shared_ptr<const void> owner, const LoadOptions& options,
                             std::string_view file);

// The tensor `info` stored at `offset_bytes` of `file` (exactly info.size_bytes() bytes there),
// per `options`: a view of the mapping when that is allowed and aligned (see tensor_from_bytes),
// else one positioned read into a fresh tensor, then any dtype/device conversion.
at::Tensor load_from_file(const std::shared_ptr<const MappedFile>& file, std::uint64_t offset_bytes,
                          const TensorInfo& info, const LoadOptions& options);

// Applies options.dtype/device to a tensor already in memory (one copy at most; none when
// nothing changes unless options.copy).
at::Tensor convert(const at::Tensor& tensor, const LoadOptions& options);

// The bytes of a contiguous CPU tensor.
std::span<const std::byte> tensor_bytes(const at::Tensor& contiguous_cpu);

}  // namespace ferry::io
