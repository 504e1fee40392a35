// Compute dtypes without a model (Note [Compute dtype] in src/models/compute_dtype.cpp).
#include "ferry/core/compute_dtype.h"

#include <fmt/format.h>

#include <optional>

#include "ferry/core/error.h"

namespace ferry {

bool is_compute_dtype(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

ComputeDType parse_compute_dtype(std::string_view text) {
  if (text == "auto") return {.automatic = true};
  std::optional<DType> d;
  try {
    d = parse_dtype(text);
  } catch (const InvalidArgument&) {
  }
  if (!d || !is_compute_dtype(*d)) {
    throw InvalidArgument(
        fmt::format("dtype '{}' is not a compute dtype ferry runs in: expected one of {}", text,
                    kComputeDTypeNames),
        ErrorFields{.path = "dtype",
                    .expected = std::string(kComputeDTypeNames),
                    .actual = std::string(text)});
  }
  return {.dtype = *d};
}

std::string compute_dtype_name(const ComputeDType& dtype) {
  return dtype.automatic ? std::string("auto") : std::string(torch_name(dtype.dtype));
}

void check_computable(DType compute, bool on_cuda_only) {
  if (compute != DType::kF16 || on_cuda_only) return;
  throw Unsupported(
      "compute dtype float16 needs a CUDA GPU: LibTorch 1.13 has no float16 kernels on the CPU "
      "(addmm, bmm, silu, layer_norm, softmax); compute in float32 (the default: a float16 "
      "checkpoint's weights stay float16) or bfloat16",
      ErrorFields{
          .path = "dtype", .expected = "float32 or bfloat16 on the CPU", .actual = "float16"});
}

DType held_dtype(DType stored, DType compute) {
  return element_bits(compute) < element_bits(stored) ? compute : stored;
}

}  // namespace ferry
