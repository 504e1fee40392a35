#pragma once
// Byte counts: a strong integer type with Accelerate-compatible parsing of size strings
// ("10GiB", "10GB", "10Gb", plain integers) and human formatting.

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace ferry {

// A non-negative number of bytes. Never fractional: sub-byte quantities are counted in bits
// elsewhere and converted once.
class Bytes {
 public:
  constexpr Bytes() = default;
  constexpr explicit Bytes(std::uint64_t value) : value_(value) {}

  // Parses a size with the meaning of Accelerate's convert_file_size_to_int:
  //   "<number><unit>" with unit GiB/MiB/KiB (powers of 2, any case) or GB/MB/KB (powers of 10);
  //   a lowercase trailing 'b' on GB/MB/KB means bits (the value is divided by 8, rounding down);
  //   whitespace is allowed before the number and between number and unit; the number is a
  //   non-negative decimal ("1.5GB" = 1500000000); the product is truncated like Python's int().
  // Also accepts a plain non-negative integer ("1024" = 1024 bytes), which Accelerate only takes
  // as a Python int. Anything else throws InvalidArgument quoting the input.
  static Bytes parse(std::string_view text);

  constexpr std::uint64_t value() const noexcept { return value_; }
  constexpr auto operator<=>(const Bytes&) const = default;
  constexpr Bytes operator+(Bytes o) const noexcept { return Bytes(value_ + o.value_); }
  constexpr Bytes& operator+=(Bytes o) noexcept {
    value_ += o.value_;
    return *this;
  }

  // "512 B", "1.50 KiB", "10.00 GiB": binary units, two decimals above bytes.
  std::string to_string() const;

 private:
  std::uint64_t value_ = 0;
};

constexpr Bytes operator""_KiB(unsigned long long v) { return Bytes(v << 10); }
constexpr Bytes operator""_MiB(unsigned long long v) { return Bytes(v << 20); }
constexpr Bytes operator""_GiB(unsigned long long v) { return Bytes(v << 30); }

// Human formatting of a raw byte count (same as Bytes(n).to_string()).
std::string format_bytes(std::uint64_t n);

}  // namespace ferry
