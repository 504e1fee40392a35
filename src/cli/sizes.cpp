#include "cli/sizes.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/plan/memory_budget.h"

namespace ferry::cli {
namespace {

constexpr std::string_view kAcceptedForms =
    "an integer number of bytes (1024), or a number with a unit: GiB, MiB, KiB (powers of 1024) "
    "or GB, MB, KB (powers of 1000), e.g. 8GiB or 1.5GB";

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) s.remove_suffix(1);
  return s;
}

// "8" of "8G" / "8T" / "8Gi": a number followed by a unit letter without its B (a habit of
// `free -h`, Kubernetes and llama.cpp): the likely meant sizes, for the message.
std::string unit_hint(std::string_view text) {
  const std::string_view t = trim(text);
  std::size_t digits = 0;
  while (digits < t.size() &&
         (std::isdigit(static_cast<unsigned char>(t[digits])) != 0 || t[digits] == '.')) {
    ++digits;
  }
  if (digits == 0 || digits == t.size()) return "";
  std::string unit(t.substr(digits));
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  if (unit.empty()) return "";
  const char letter = static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])));
  if (letter != 'K' && letter != 'M' && letter != 'G' && letter != 'T') return "";
  if (unit.size() > 2 || (unit.size() == 2 && unit[1] != 'i' && unit[1] != 'I')) return "";
  const std::string_view number = t.substr(0, digits);
  if (letter == 'T') {
    const double value = std::strtod(std::string(number).c_str(), nullptr);
    return fmt::format(" (there is no TB unit: write {:g}GB or {:g}GiB)", value * 1000,
                       value * 1024);
  }
  return fmt::format(" (did you mean {}{}iB or {}{}B?)", number, letter, number, letter);
}

}  // namespace

Bytes parse_size_flag(std::string_view flag, std::string_view text, bool warn) {
  Bytes bytes;
  try {
    bytes = Bytes::parse(text);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("{}: '{}' is not a size{}: expected {}", flag, text,
                                      unit_hint(text), kAcceptedForms),
                          ErrorFields{.path = std::string(flag),
                                      .expected = std::string(kAcceptedForms),
                                      .actual = std::string(text)});
  }
  const std::string_view t = trim(text);
  // Accelerate's rule, kept: GB/MB/KB with a lowercase final b is bits. Nobody writing "600mb"
  // means 75 MB, so say what it is.
  if (warn && t.size() >= 2 && t.back() == 'b') {
    const char prefix =
        static_cast<char>(std::toupper(static_cast<unsigned char>(t[t.size() - 2])));
    if (prefix == 'K' || prefix == 'M' || prefix == 'G') {
      std::string as_bytes(t);
      as_bytes.back() = 'B';
      as_bytes[as_bytes.size() - 2] = prefix;
      const std::string binary = as_bytes.substr(0, as_bytes.size() - 1) + "iB";
      log_warning(
          "{} {}: a lowercase 'b' means bits (as in Accelerate), so this is {} bytes ({}); for "
          "bytes write {} ({} bytes) or {} ({})",
          flag, text, bytes.value(), format_bytes(bytes.value()), as_bytes,
          Bytes::parse(as_bytes).value(), binary, format_bytes(Bytes::parse(binary).value()));
    }
  }
  return bytes;
}

void check_budget_sizes(std::string_view flag, std::string_view text) {
  for (const plan::BudgetEntry& e : plan::parse_budget_entries(text)) {
    (void)parse_size_flag(fmt::format("{} {}", flag, e.device), e.size, /*warn=*/true);
  }
}

std::string format_count(std::uint64_t n) {
  constexpr std::array<std::string_view, 4> kNames{"K", "M", "B", "T"};
  if (n < 1000) return std::to_string(n);
  double v = static_cast<double>(n);
  std::size_t i = 0;
  v /= 1000.0;
  while (v >= 999.5 && i + 1 < kNames.size()) {
    v /= 1000.0;
    ++i;
  }
  const int decimals = v >= 99.95 ? 0 : v >= 9.995 ? 1 : 2;
  return fmt::format("{:.{}f} {}", v, decimals, kNames[i]);
}

}  // namespace ferry::cli
