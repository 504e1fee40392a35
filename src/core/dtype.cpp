#include "ferry/core/dtype.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <string>

#include "ferry/core/error.h"

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

int ElementType::bits() const { return dtype_ ? element_bits(*dtype_) : bits_; }

int ElementType::accounting_bits() const {
  return dtype_ ? ferry::accounting_bits(*dtype_) : bits();
}

bool ElementType::is_floating() const {
  return dtype_ ? ferry::is_floating(*dtype_) : floating_;
}

bool ElementType::is_integral_or_bool() const {
  return dtype_ ? ferry::is_integral_or_bool(*dtype_) : integral_;
}

std::string ElementType::name() const {
  return dtype_ ? std::string(safetensors_name(*dtype_)) : std::string(name_);
}

}  // namespace ferry
