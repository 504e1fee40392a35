#include "byte_level.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <array>
#include <limits>
#include <pcre2.h>

#include "ferry/core/error.h"

namespace ferry::models::detail {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256 + n.
struct ByteTable {
  std::array<std::string, 256> to_printable;
  std::unordered_map<std::string, unsigned char> to_byte;
  ByteTable() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      to_printable[static_cast<std::size_t>(b)] = utf8_encode(cp);
      to_byte[to_printable[static_cast<std::size_t>(b)]] = static_cast<unsigned char>(b);
    }
  }
};

const ByteTable& table() {
  static const ByteTable t;
  return t;
}

std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

}  // namespace

std::string utf8_encode(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

std::vector<std::string> utf8_chars(std::string_view text) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = utf8_length(static_cast<unsigned char>(text[i]));
    if (i + n > text.size()) n = 1;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) n = 1;
    }
    out.emplace_back(text.substr(i, n));
    i += n;
  }
  return out;
}

std::string bytes_to_printable(std::string_view text) {
  std::string out;
  for (char c : text) out += table().to_printable[static_cast<unsigned char>(c)];
  return out;
}

std::string printable_to_bytes(std::string_view text) {
  std::string out;
  for (const std::string& ch : utf8_chars(text)) {
    auto it = table().to_byte.find(ch);
    if (it != table().to_byte.end()) {
      out += static_cast<char>(it->second);
    } else {
      out += ch;
    }
  }
  return out;
}

Regex::Regex(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  if (code_ == nullptr) {
    std::array<PCRE2_UCHAR, 256> message{};
    pcre2_get_error_message(error, message.data(), message.size());
    throw InvalidArgument(fmt::format("regex '{}' does not compile at offset {}: {}", pattern,
                                      offset, reinterpret_cast<const char*>(message.data())));
  }
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::string> Regex::split(std::string_view text) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  std::vector<std::string> out;
  std::size_t gap_start = 0;
  std::size_t at = 0;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (at <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), at, 0, data, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const std::size_t begin = ovector[0];
    const std::size_t end = ovector[1];
    if (end == begin) {  // empty match: step one character on
      at = begin + 1;
      continue;
    }
    if (begin > gap_start) out.emplace_back(text.substr(gap_start, begin - gap_start));
    out.emplace_back(text.substr(begin, end - begin));
    gap_start = at = end;
  }
  if (gap_start < text.size()) out.emplace_back(text.substr(gap_start));
  pcre2_match_data_free(data);
  return out;
}

std::vector<std::string> bpe(std::vector<std::string> symbols, const MergeRanks& ranks) {
  while (symbols.size() > 1) {
    std::int64_t best = std::numeric_limits<std::int64_t>::max();
    std::size_t best_at = 0;
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = ranks.find(symbols[i] + ' ' + symbols[i + 1]);
      if (it != ranks.end() && it->second < best) {
        best = it->second;
        best_at = i;
      }
    }
    if (best == std::numeric_limits<std::int64_t>::max()) break;
    const std::string left = symbols[best_at];
    const std::string right = symbols[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (std::size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(left + right);
        ++i;
      } else {
        merged.push_back(symbols[i]);
      }
    }
    symbols = std::move(merged);
  }
  return symbols;
}

}  // namespace ferry::models::detail
