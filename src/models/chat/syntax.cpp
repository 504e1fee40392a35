#include "models/chat/syntax.h"

#include <fmt/format.h>

#include "models/chat/text.h"

namespace ferry::models::chat {

Source::Source(std::string_view raw_text, std::string origin_name)
    : origin(std::move(origin_name)) {
  text.reserve(raw_text.size());
  for (std::size_t i = 0; i < raw_text.size(); ++i) {
    if (raw_text[i] != '\r') {
      text.push_back(raw_text[i]);
    } else {
      text.push_back('\n');
      if (i + 1 < raw_text.size() && raw_text[i + 1] == '\n') ++i;
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
}

std::string Source::where(std::size_t offset) const {
  return fmt::format("{} at {}", origin, position(offset));
}

std::string Source::position(std::size_t offset) const {
  offset = std::min(offset, text.size());
  const std::string_view before = std::string_view(text).substr(0, offset);
  std::size_t line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < before.size(); ++i) {
    if (before[i] == '\n') ++line, line_start = i + 1;
  }
  return fmt::format("{}:{}", line, code_point_count(before.substr(line_start)) + 1);
}

}  // namespace ferry::models::chat
