#include "plan/size_format.h"

#include <fmt/format.h>

namespace ferry::plan {

std::string format_size_bits(std::int64_t bits) {
  const bool negative = bits < 0;
  const std::uint64_t magnitude =
      negative ? static_cast<std::uint64_t>(-(bits + 1)) + 1 : static_cast<std::uint64_t>(bits);
  std::string out = fmt::format("{}{}", negative ? "-" : "", magnitude / 8);
  if (const std::uint64_t eighths = magnitude % 8; eighths != 0) {
    // k/8 = k·125/1000: at most three decimals, trailing zeros dropped as Python's repr does.
    std::string digits = fmt::format("{:03}", eighths * 125);
    while (digits.back() == '0') digits.pop_back();
    out += "." + digits;
  }
  return out;
}

namespace {
std::string py_str(const std::string& s) {
  // Python quotes with ' unless the text holds a ' and no ".
  const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = use_double ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == '\\' || (c == q)) out += '\\';
    out += c;
  }
  out += q;
  return out;
}
}  // namespace

std::string py_list(std::span<const std::string> items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += py_str(items[i]);
  }
  return out + "]";
}

std::string py_nested_list(std::span<const std::vector<std::string>> groups) {
  std::string out = "[";
  for (std::size_t i = 0; i < groups.size(); ++i) {
    if (i) out += ", ";
    out += py_list(groups[i]);
  }
  return out + "]";
}

}  // namespace ferry::plan
