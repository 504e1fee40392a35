#include "engine/world_text.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace ferry::engine::detail {
namespace {

// A value shown in full up to this many bytes; longer ones around their difference.
constexpr std::size_t kShownBytes = 80;

}  // namespace

std::string duration_text(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return fmt::format("{} s", d.count() / 1000);
  return fmt::format("{:g} s", static_cast<double>(d.count()) / 1000.0);
}

std::string ranks_text(const std::vector<int>& ranks) {
  if (ranks.size() == 1) return fmt::format("rank {}", ranks[0]);
  std::string text = "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) text += i + 1 == ranks.size() ? " and " : ", ";
    text += std::to_string(ranks[i]);
  }
  return text;
}

std::string reason_of(const std::exception& e) {
  std::string text;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    text = c10_error->what_without_backtrace();
  } else {
    text = e.what();
  }
  if (const std::size_t eol = text.find('\n'); eol != std::string::npos) text.resize(eol);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return text;
}

std::string quote_text(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string shown(std::string_view value, std::string_view other) {
  if (value.size() <= kShownBytes) return quote_text(value);
  std::size_t diff = 0;
  while (diff < value.size() && diff < other.size() && value[diff] == other[diff]) ++diff;
  const std::size_t begin = diff > kShownBytes / 4 ? diff - kShownBytes / 4 : 0;
  const std::size_t end = std::min(value.size(), begin + kShownBytes);
  return fmt::format("{}{}{} ({} bytes, differing from byte {})", begin > 0 ? "…" : "",
                     quote_text(value.substr(begin, end - begin)), end < value.size() ? "…" : "",
                     value.size(), diff);
}

}  // namespace ferry::engine::detail
