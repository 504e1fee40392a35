#include "io/tensor_bytes.h"

#include <bit>
#include <cstring>
#include <sys/mman.h>

#include "ferry/core/error.h"

namespace ferry::io {

// safetensors and the offload folder store little-endian bytes; views reinterpret them as-is.
static_assert(std::endian::native == std::endian::little, "ferry reads checkpoints in place");

namespace {

c10::ScalarType scalar_type_for(const TensorInfo& info, std::string_view file) {
  if (auto t = to_scalar_type(info.dtype)) return *t;
  throw Unsupported(
      fmt::format("tensor '{}' in {}: dtype {} has no LibTorch scalar type in this build; "
                  "its bytes can be inspected and copied but not loaded as a tensor",
                  info.name, file, safetensors_name(info.dtype)),
      ErrorFields{.path = info.name,
                  .file = std::string(file),
                  .expected = "a dtype LibTorch supports",
                  .actual = std::string(safetensors_name(info.dtype))});
}

}  // namespace

at::Tensor convert(const at::Tensor& tensor, const LoadOptions& options) {
  const c10::ScalarType dtype =
      options.dtype ? require_scalar_type(*options.dtype) : tensor.scalar_type();
  if (dtype == tensor.scalar_type() && options.device == tensor.device()) {
    return options.copy ? tensor.clone() : tensor;
  }
  return tensor.to(options.device, dtype, /*non_blocking=*/false, /*copy=*/false);
}

at::Tensor tensor_from_bytes(std::span<std::byte> bytes, const TensorInfo& info,
                             std::shared_ptr<const void> owner, const LoadOptions& options,
                             std::string_view file) {
  FERRY_ASSERT(bytes.size() == info.size_bytes(), "tensor '{}': {} bytes for {} expected",
               info.name, bytes.size(), info.size_bytes());
  const c10::ScalarType stored = scalar_type_for(info, file);
  const auto cpu = at::TensorOptions().dtype(stored).device(c10::kCPU);
  const bool converts = (options.dtype && require_scalar_type(*options.dtype) != stored) ||
                        options.device != c10::Device(c10::kCPU);
  const bool aligned = reinterpret_cast<std::uintptr_t>(bytes.data()) %
                           static_cast<std::uintptr_t>(element_size(info.dtype)) ==
                       0;
  at::Tensor tensor;
  if (owner && aligned && (converts || !options.copy)) {
    // The view keeps the owner (the mapping) alive for as long as LibTorch holds the storage.
    tensor = at::from_blob(
        bytes.data(), info.shape, [keep = std::move(owner)](void*) mutable { keep.reset(); }, cpu);
  } else {
    tensor = at::empty(info.shape, cpu);
    if (!bytes.empty()) std::memcpy(tensor.data_ptr(), bytes.data(), bytes.size());
  }
  if (!converts) return tensor;
  return convert(tensor, LoadOptions{.dtype = options.dtype, .device = options.device});
}

at::Tensor load_from_file(const std::shared_ptr<const MappedFile>& file, std::uint64_t offset_bytes,
                          const TensorInfo& info, const LoadOptions& options) {
  const std::string name = file->path().string();
  const c10::ScalarType stored = scalar_type_for(info, name);
  const bool converts = (options.dtype && require_scalar_type(*options.dtype) != stored) ||
                        options.device != c10::Device(c10::kCPU);
  std::span<std::byte> bytes(file->mutable_data() + offset_bytes, info.size_bytes());
  const bool aligned = reinterpret_cast<std::uintptr_t>(bytes.data()) %
                           static_cast<std::uintptr_t>(element_size(info.dtype)) ==
                       0;
  if (!converts && aligned && !options.copy) return tensor_from_bytes(bytes, info, file, options, name);
  // Copied, or converted to another dtype or device: read with pread into a buffer of this
  // tensor alone, not through the mapping, whose pages would stay in the process's resident set
  // (a --dtype conversion of a whole checkpoint would otherwise count all of it against the CPU
  // budget while only the converted copies are kept).
  at::Tensor tensor = at::empty(info.shape, at::TensorOptions().dtype(stored));
  if (converts) {
    if (!bytes.empty()) {
      file->read(offset_bytes,
                 std::span<std::byte>(static_cast<std::byte*>(tensor.data_ptr()), bytes.size()));
    }
    return convert(tensor, LoadOptions{.dtype = options.dtype, .device = options.device});
  }
  if (bytes.empty()) return tensor;
  // A fresh multi-MiB buffer is faulted in page by page while it is filled; huge pages (where
  // the system has them on request) cut the faults 512-fold.
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(tensor.data_ptr());
  const std::uintptr_t first = (begin + kHuge - 1) / kHuge * kHuge;
  const std::uintptr_t last = (begin + bytes.size()) / kHuge * kHuge;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  file->read(offset_bytes,
             std::span<std::byte>(static_cast<std::byte*>(tensor.data_ptr()), bytes.size()));
  return tensor;
}

std::span<const std::byte> tensor_bytes(const at::Tensor& contiguous_cpu) {
  FERRY_ASSERT(contiguous_cpu.is_contiguous() && contiguous_cpu.device().is_cpu(),
               "tensor_bytes needs a contiguous CPU tensor");
  return {static_cast<const std::byte*>(contiguous_cpu.data_ptr()),
          static_cast<std::size_t>(contiguous_cpu.nbytes())};
}

}  // namespace ferry::io
