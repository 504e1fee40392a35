#include "io/offload_names.h"

#include <fmt/format.h>

#include "io/printable.h"

namespace ferry::io {

// For every dtype numpy knows, LibTorch's name is numpy's; bfloat16 is Accelerate's own mark.
std::string_view offload_dtype_name(DType d) { return torch_name(d); }

std::optional<DType> dtype_from_offload_name(std::string_view name) {
  if (name.starts_with("torch.")) name.remove_prefix(6);
  for (DType d : all_dtypes()) {
    if (torch_name(d) == name) return d;
  }
  return std::nullopt;
}

bool is_plain_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

CorruptFile escaping_safetensors_file(const OffloadEntry& e,
                                      const std::filesystem::path& index_path) {
  return CorruptFile(
      fmt::format("tensor '{}' in {}: safetensors_file must name a file inside the offload "
                  "folder: expected a relative path without '..', got '{}'",
                  printable(e.name), index_path.string(), printable(e.safetensors_file.native())),
      ErrorFields{.path = e.name,
                  .file = index_path.string(),
                  .expected = "a relative path inside the folder",
                  .actual = printable(e.safetensors_file.native())});
}

}  // namespace ferry::io
