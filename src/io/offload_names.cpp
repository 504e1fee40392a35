#include "io/offload_names.h"

#include <fmt/format.h>

#include "ferry/core/error.h"
#include "io/confined_path.h"
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

OffloadIndex open_offload_index(const std::filesystem::path& folder) {
  const auto index_path = folder / "index.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(index_path, ec)) {
    throw IoError(
        fmt::format("{} is not an offload folder: it has no index.json", folder.string()),
        ErrorFields{
            .file = index_path.string(), .expected = "index.json", .actual = "no such file"});
  }
  OffloadIndex index = load_offload_index(folder);
  for (const OffloadEntry& e : index) {
    if (e.in_safetensors() && !is_confined_name(e.safetensors_file.native())) {
      throw escaping_safetensors_file(e, index_path);
    }
  }
  return index;
}

}  // namespace ferry::io
