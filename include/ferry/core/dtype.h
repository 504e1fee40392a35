#pragma once
// Element types of tensors as stored in checkpoints (the safetensors dtype codes), with their
// sizes and their LibTorch scalar types where this LibTorch has one.
//
// No LibTorch header here: the LibTorch-free front end of the CLI (`ferry plan`, `inspect`)
// plans with these types. c10::ScalarType is declared opaquely (its underlying type is checked
// against LibTorch's in dtype_torch.cpp); the functions that take or return one are defined
// there, in the LibTorch part of the core layer.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace c10 {
enum class ScalarType : std::int8_t;
}  // namespace c10

namespace ferry {

enum class DType : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kF8_E5M2,
  kF8_E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

// Every DType, in the order above (the safetensors alignment order).
std::span<const DType> all_dtypes();

// Storage size of one element in bits (BOOL is stored as one byte: 8).
int element_bits(DType d);
// Storage size of one element in bytes.
inline int element_size(DType d) { return element_bits(d) / 8; }
// Size of one element in bits as Accelerate's dtype_byte_size counts it for memory planning:
// bool counts 1 bit (1/8 byte); everything else equals element_bits.
int accounting_bits(DType d);

bool is_floating(DType d);
// Integer and bool types keep their size under Accelerate's dtype "min rule".
inline bool is_integral_or_bool(DType d) { return !is_floating(d); }

// safetensors code: "F32", "BF16", "F8_E4M3", "BOOL", ...
std::string_view safetensors_name(DType d);
// LibTorch / PyTorch name without "torch.": "float32", "bfloat16", "float8_e4m3fn", "bool", ...
std::string_view torch_name(DType d);

// Parses a safetensors code ("F16"), a torch name with or without "torch." ("float16",
// "torch.bfloat16"), or a common alias ("fp16", "bf16", "fp32", "half", "float", "double").
// Throws InvalidArgument naming the input and the accepted names.
DType parse_dtype(std::string_view text);
// Parses a safetensors code only; nullopt for anything else.
std::optional<DType> dtype_from_safetensors(std::string_view code);

// The LibTorch scalar type of `d`, or nullopt where this LibTorch has none (unsigned 16/32/64
// bits everywhere; float8 types before LibTorch 2.1).
std::optional<c10::ScalarType> to_scalar_type(DType d);
// Like to_scalar_type but throws Unsupported naming the dtype.
c10::ScalarType require_scalar_type(DType d);
// The DType of a LibTorch scalar type; throws Unsupported for types safetensors cannot store
// (complex, quantized).
DType from_scalar_type(c10::ScalarType t);

// The element type of a tensor as planning counts it: a DType, or a LibTorch scalar type that
// safetensors cannot store (complex, quantized). Sizing needs only its bits, so a model holding
// any LibTorch type can be measured and planned, whatever a checkpoint could hold.
class ElementType {
 public:
  // NOLINTNEXTLINE(google-explicit-constructor): every DType is an element type.
  constexpr ElementType(DType d) noexcept : dtype_(d) {}
  // Any LibTorch scalar type but Undefined (InvalidArgument); a DType where there is one.
  static ElementType of(c10::ScalarType t);

  // The safetensors dtype; nullopt for complex and quantized types.
  std::optional<DType> dtype() const noexcept { return dtype_; }
  // Storage bits of one element: complex64 64, complex128 128, quint4x2 4, bool 8.
  int bits() const;
  // Bits as Accelerate's dtype_byte_size counts them for planning: bool 1, else bits().
  int accounting_bits() const;
  // Real floating point (what a --dtype conversion applies to); complex is not.
  bool is_floating() const;
  // Integers and bool keep their size under Accelerate's dtype "min rule"; every other type
  // (floating, complex, quantized) counts min(its bits, the target dtype's).
  bool is_integral_or_bool() const;
  // "F32", "BF16" for a DType; LibTorch's name ("ComplexFloat", "QInt8") otherwise.
  std::string name() const;

  bool operator==(const ElementType& other) const {
    return dtype_ == other.dtype_ && (dtype_ || name_ == other.name_);
  }

 private:
  // A LibTorch type safetensors cannot store, described by what sizing needs (set by of()).
  ElementType(int bits, bool floating, bool integral, std::string_view name) noexcept
      : bits_(bits), floating_(floating), integral_(integral), name_(name) {}
  std::optional<DType> dtype_;
  // When dtype_ is empty:
  int bits_ = 0;
  bool floating_ = false;
  bool integral_ = false;
  std::string_view name_;  // LibTorch's name of the type (a static string)
};

}  // namespace ferry
