#include "ferry/core/bytes.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>

#include "ferry/core/error.h"

namespace ferry {
namespace {

[[noreturn]] void reject(std::string_view text) {
  throw InvalidArgument(
      fmt::format("`size` {} is not in a valid format. Use an integer for bytes, or a string with "
                  "an unit (like '5.0GB').",
                  text),
      ErrorFields{.expected = "an integer or a number with a unit (GiB, MiB, KiB, GB, MB, KB)",
                  .actual = std::string(text)});
}

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string_view trim_left(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// True for "123", "1.5", "1.", ".5": a plain non-negative decimal, no sign, exponent or '_'.
bool is_decimal(std::string_view s) {
  bool digits = false;
  bool dot = false;
  for (char c : s) {
    if (std::isdigit(static_cast<unsigned char>(c)) != 0) {
      digits = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      return false;
    }
  }
  return digits;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) !=
        std::toupper(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

struct Unit {
  std::string_view suffix;
  double scale;
  bool bit_rule;  // a lowercase trailing 'b' means bits
};

// The binary units come first, as in Accelerate: "1GiB" ends with "IB", never with "GB".
constexpr std::array<Unit, 6> kUnits{{{"GIB", 1073741824.0, false},
                                      {"MIB", 1048576.0, false},
                                      {"KIB", 1024.0, false},
                                      {"GB", 1e9, true},
                                      {"MB", 1e6, true},
                                      {"KB", 1e3, true}}};

}  // namespace

Bytes Bytes::parse(std::string_view text) {
  // Whitespace may precede the number (Python's float() strips it) but not follow the unit.
  const std::string_view body = trim_left(text);
  if (body.empty() || is_space(body.back())) reject(text);

  // Plain integer: bytes.
  if (std::all_of(body.begin(), body.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; })) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
    if (ec != std::errc() || end != body.data() + body.size()) reject(text);
    return Bytes(v);
  }

  for (const Unit& unit : kUnits) {
    if (body.size() <= unit.suffix.size()) continue;
    const std::string_view suffix = body.substr(body.size() - unit.suffix.size());
    if (!iequals(suffix, unit.suffix)) continue;
    const std::string_view number = trim_right(body.substr(0, body.size() - unit.suffix.size()));
    if (!is_decimal(number)) reject(text);
    // Accelerate computes int(float(number) * scale) in double precision; doing the same keeps
    // results identical for inputs such as "1.1GiB".
    const double value = std::strtod(std::string(number).c_str(), nullptr) * unit.scale;
    if (!(value < 18446744073709551616.0)) reject(text);
    std::uint64_t bytes = static_cast<std::uint64_t>(value);
    if (unit.bit_rule && suffix.back() == 'b') bytes /= 8;
    return Bytes(bytes);
  }
  reject(text);
}

std::string Bytes::to_string() const { return format_bytes(value_); }

std::string format_bytes(std::uint64_t n) {
  static constexpr std::array<std::string_view, 6> kNames{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (n < 1024) return fmt::format("{} B", n);
  double v = static_cast<double>(n);
  std::size_t i = 0;
  v /= 1024.0;
  while (v >= 1024.0 && i + 1 < kNames.size()) {
    v /= 1024.0;
    ++i;
  }
  return fmt::format("{:.2f} {}", v, kNames[i]);
}

}  // namespace ferry
