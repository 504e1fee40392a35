// The LibTorch half of dtype.h: DType <-> c10::ScalarType, and the element type of any
// LibTorch scalar type.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/version.h>

#include <type_traits>

#include "ferry/core/dtype.h"
#include "ferry/core/error.h"

// dtype.h declares c10::ScalarType opaquely; this is the declaration it must match.
static_assert(std::is_same_v<std::underlying_type_t<c10::ScalarType>, std::int8_t>,
              "c10::ScalarType's underlying type changed: update the declaration in dtype.h");

// float8 scalar types exist from LibTorch 2.1 on; ferry knows the dtypes either way and maps them
// to LibTorch only where it can. This is the one version shim of this file.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define FERRY_HAS_FLOAT8 1
#else
#define FERRY_HAS_FLOAT8 0
#endif

namespace ferry {

std::optional<c10::ScalarType> to_scalar_type(DType d) {
  switch (d) {
    case DType::kBool: return c10::ScalarType::Bool;
    case DType::kU8: return c10::ScalarType::Byte;
    case DType::kI8: return c10::ScalarType::Char;
    case DType::kI16: return c10::ScalarType::Short;
    case DType::kF16: return c10::ScalarType::Half;
    case DType::kBF16: return c10::ScalarType::BFloat16;
    case DType::kI32: return c10::ScalarType::Int;
    case DType::kF32: return c10::ScalarType::Float;
    case DType::kF64: return c10::ScalarType::Double;
    case DType::kI64: return c10::ScalarType::Long;
#if FERRY_HAS_FLOAT8
    case DType::kF8_E5M2: return c10::ScalarType::Float8_e5m2;
    case DType::kF8_E4M3: return c10::ScalarType::Float8_e4m3fn;
#else
    case DType::kF8_E5M2:
    case DType::kF8_E4M3:
#endif
    case DType::kU16:
    case DType::kU32:
    case DType::kU64: return std::nullopt;
  }
  return std::nullopt;
}

c10::ScalarType require_scalar_type(DType d) {
  if (auto t = to_scalar_type(d)) return *t;
  throw Unsupported(fmt::format("dtype {} has no LibTorch scalar type in LibTorch {}",
                                safetensors_name(d), TORCH_VERSION),
                    ErrorFields{.expected = "a dtype LibTorch supports",
                                .actual = std::string(safetensors_name(d))});
}

DType from_scalar_type(c10::ScalarType t) {
  for (DType d : all_dtypes()) {
    if (to_scalar_type(d) == t) return d;
  }
  throw Unsupported(
      fmt::format("LibTorch scalar type {} has no safetensors dtype", c10::toString(t)),
      ErrorFields{.expected = "a dtype safetensors can store", .actual = c10::toString(t)});
}

ElementType ElementType::of(c10::ScalarType t) {
  FERRY_CHECK(t != c10::ScalarType::Undefined, InvalidArgument,
              "a tensor of undefined scalar type has no element size");
  for (DType d : all_dtypes()) {
    if (to_scalar_type(d) == t) return d;
  }
  // Sub-byte quantized types pack several elements per byte; c10::elementSize counts the byte.
  int bits = static_cast<int>(c10::elementSize(t)) * 8;
  if (t == c10::ScalarType::QUInt4x2) bits = 4;
  if (t == c10::ScalarType::QUInt2x4) bits = 2;
  return ElementType(bits, c10::isFloatingType(t), c10::isIntegralType(t, /*includeBool=*/true),
                     c10::toString(t));
}

}  // namespace ferry
