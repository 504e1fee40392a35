#include "ferry/core/dtype.h"

#include <fmt/format.h>
#include <torch/version.h>

#include <array>
#include <cctype>
#include <string>

#include "ferry/core/error.h"

// float8 scalar types exist from LibTorch 2.1 on; ferry knows the dtypes either way and maps them
// to LibTorch only where it can. This is the one version shim of this file.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define FERRY_HAS_FLOAT8 1
#else
#define FERRY_HAS_FLOAT8 0
#endif

namespace ferry {
namespace {

struct Info {
  DType dtype;
  std::string_view safetensors;
  std::string_view torch;
  int bits;
  bool floating;
};

constexpr std::array<Info, 15> kInfo{{
    {DType::kBool, "BOOL", "bool", 8, false},
    {DType::kU8, "U8", "uint8", 8, false},
    {DType::kI8, "I8", "int8", 8, false},
    {DType::kF8_E5M2, "F8_E5M2", "float8_e5m2", 8, true},
    {DType::kF8_E4M3, "F8_E4M3", "float8_e4m3fn", 8, true},
    {DType::kI16, "I16", "int16", 16, false},
    {DType::kU16, "U16", "uint16", 16, false},
    {DType::kF16, "F16", "float16", 16, true},
    {DType::kBF16, "BF16", "bfloat16", 16, true},
    {DType::kI32, "I32", "int32", 32, false},
    {DType::kU32, "U32", "uint32", 32, false},
    {DType::kF32, "F32", "float32", 32, true},
    {DType::kF64, "F64", "float64", 64, true},
    {DType::kI64, "I64", "int64", 64, false},
    {DType::kU64, "U64", "uint64", 64, false},
}};

constexpr std::array<DType, 15> kAll{DType::kBool,    DType::kU8,  DType::kI8,  DType::kF8_E5M2,
                                     DType::kF8_E4M3, DType::kI16, DType::kU16, DType::kF16,
                                     DType::kBF16,    DType::kI32, DType::kU32, DType::kF32,
                                     DType::kF64,     DType::kI64, DType::kU64};

const Info& info(DType d) { return kInfo[static_cast<std::size_t>(d)]; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::span<const DType> all_dtypes() { return kAll; }

int element_bits(DType d) { return info(d).bits; }

int accounting_bits(DType d) { return d == DType::kBool ? 1 : info(d).bits; }

bool is_floating(DType d) { return info(d).floating; }

std::string_view safetensors_name(DType d) { return info(d).safetensors; }

std::string_view torch_name(DType d) { return info(d).torch; }

std::optional<DType> dtype_from_safetensors(std::string_view code) {
  for (const Info& i : kInfo) {
    if (i.safetensors == code) return i.dtype;
  }
  return std::nullopt;
}

DType parse_dtype(std::string_view text) {
  if (auto d = dtype_from_safetensors(text)) return *d;
  std::string name = lower(text);
  if (name.starts_with("torch.")) name.erase(0, 6);
  for (const Info& i : kInfo) {
    if (i.torch == name) return i.dtype;
  }
  static constexpr std::array<std::pair<std::string_view, DType>, 12> kAliases{{
      {"fp16", DType::kF16},
      {"half", DType::kF16},
      {"bf16", DType::kBF16},
      {"fp32", DType::kF32},
      {"float", DType::kF32},
      {"fp64", DType::kF64},
      {"double", DType::kF64},
      {"long", DType::kI64},
      {"int", DType::kI32},
      {"short", DType::kI16},
      {"float8_e4m3", DType::kF8_E4M3},
      {"uint", DType::kU32},
  }};
  for (const auto& [alias, d] : kAliases) {
    if (alias == name) return d;
  }
  throw InvalidArgument(
      fmt::format("unknown dtype '{}': expected a safetensors code (F32, F16, BF16, F8_E4M3, ...) "
                  "or a torch name (float32, float16, bfloat16, int8, bool, ...)",
                  text),
      ErrorFields{.expected = "a dtype name", .actual = std::string(text)});
}

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
  for (DType d : kAll) {
    if (to_scalar_type(d) == t) return d;
  }
  throw Unsupported(
      fmt::format("LibTorch scalar type {} has no safetensors dtype", c10::toString(t)),
      ErrorFields{.expected = "a dtype safetensors can store", .actual = c10::toString(t)});
}

ElementType ElementType::of(c10::ScalarType t) {
  FERRY_CHECK(t != c10::ScalarType::Undefined, InvalidArgument,
              "a tensor of undefined scalar type has no element size");
  for (DType d : kAll) {
    if (to_scalar_type(d) == t) return d;
  }
  return ElementType(t);
}

int ElementType::bits() const {
  if (dtype_) return element_bits(*dtype_);
  // Sub-byte quantized types pack several elements per byte; c10::elementSize counts the byte.
  if (scalar_ == c10::ScalarType::QUInt4x2) return 4;
  if (scalar_ == c10::ScalarType::QUInt2x4) return 2;
  return static_cast<int>(c10::elementSize(scalar_)) * 8;
}

int ElementType::accounting_bits() const {
  return dtype_ ? ferry::accounting_bits(*dtype_) : bits();
}

bool ElementType::is_floating() const {
  return dtype_ ? ferry::is_floating(*dtype_) : c10::isFloatingType(scalar_);
}

bool ElementType::is_integral_or_bool() const {
  return dtype_ ? ferry::is_integral_or_bool(*dtype_)
                : c10::isIntegralType(scalar_, /*includeBool=*/true);
}

std::string ElementType::name() const {
  return dtype_ ? std::string(safetensors_name(*dtype_)) : std::string(c10::toString(scalar_));
}

}  // namespace ferry
