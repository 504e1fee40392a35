#include "io/offload_names.h"

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

}  // namespace ferry::io
