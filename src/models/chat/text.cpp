#include "models/chat/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace ferry::models::chat {
namespace {

struct Decoded {
  std::uint32_t code_point;  // U+FFFD for an invalid sequence
  std::size_t size_bytes;    // at least 1
};

// Decodes the UTF-8 sequence at s[i]; an invalid or truncated one is one byte of U+FFFD.
Decoded decode(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, cp = b0 & 0x07;
  } else {
    return {0xFFFD, 1};
  }
  if (i + n > s.size()) return {0xFFFD, 1};
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return {0xFFFD, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr std::uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinForLength[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {0xFFFD, 1};
  return {cp, n};
}

// Python's str.isspace() for one code point.
bool is_space(std::uint32_t cp) {
  if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20)) return true;
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool is_ascii_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_ascii_lower(char c) { return c >= 'a' && c <= 'z'; }
char upper(char c) { return is_ascii_lower(c) ? static_cast<char>(c - 'a' + 'A') : c; }
char lower(char c) { return is_ascii_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }
// Cased for Python's title(): ASCII letters, and every non-ASCII byte (most non-ASCII text in
// templates is letters; treating them as cased keeps "aéb" one word).
bool is_cased(char c) {
  return is_ascii_upper(c) || is_ascii_lower(c) || static_cast<unsigned char>(c) >= 0x80;
}

}  // namespace

std::vector<std::size_t> code_point_offsets(std::string_view s) {
  std::vector<std::size_t> offsets;
  offsets.reserve(s.size() + 1);
  for (std::size_t i = 0; i < s.size(); i += decode(s, i).size_bytes) offsets.push_back(i);
  offsets.push_back(s.size());
  return offsets;
}

std::size_t code_point_count(std::string_view s) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size(); i += decode(s, i).size_bytes) ++n;
  return n;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string_view strip(std::string_view s, const std::string* chars, bool left, bool right) {
  // Whether the code point s[i, i+n) is to be stripped.
  auto strippable = [&](std::size_t i, const Decoded& d) {
    if (chars == nullptr) return is_space(d.code_point);
    const std::string_view one = s.substr(i, d.size_bytes);
    for (std::size_t k = 0; k < chars->size(); k += decode(*chars, k).size_bytes) {
      if (std::string_view(*chars).substr(k, decode(*chars, k).size_bytes) == one) return true;
    }
    return false;
  };
  const std::vector<std::size_t> at = code_point_offsets(s);
  std::size_t first = 0;
  std::size_t last = at.size() - 1;  // code points [first, last) are kept
  while (left && first < last && strippable(at[first], decode(s, at[first]))) ++first;
  while (right && last > first && strippable(at[last - 1], decode(s, at[last - 1]))) --last;
  return s.substr(at[first], at[last] - at[first]);
}

std::vector<std::string> split(std::string_view s, const std::string* sep, std::int64_t max_split) {
  std::vector<std::string> parts;
  if (sep != nullptr) {
    std::size_t start = 0;
    while (max_split < 0 || static_cast<std::int64_t>(parts.size()) < max_split) {
      const std::size_t at = s.find(*sep, start);
      if (at == std::string_view::npos) break;
      parts.emplace_back(s.substr(start, at - start));
      start = at + sep->size();
    }
    parts.emplace_back(s.substr(start));
    return parts;
  }
  std::size_t i = 0;
  while (true) {
    while (i < s.size() && is_space(decode(s, i).code_point)) i += decode(s, i).size_bytes;
    if (i == s.size()) break;
    if (max_split >= 0 && static_cast<std::int64_t>(parts.size()) == max_split) {
      parts.emplace_back(s.substr(i));  // the rest, trailing whitespace and all
      break;
    }
    const std::size_t start = i;
    while (i < s.size() && !is_space(decode(s, i).code_point)) i += decode(s, i).size_bytes;
    parts.emplace_back(s.substr(start, i - start));
  }
  return parts;
}

std::string replace(std::string_view s, std::string_view from, std::string_view to,
                    std::int64_t count) {
  std::string out;
  std::int64_t done = 0;
  if (from.empty()) {
    const std::vector<std::size_t> at = code_point_offsets(s);
    for (std::size_t k = 0; k + 1 < at.size(); ++k) {
      if (count < 0 || done < count) out.append(to), ++done;
      out.append(s.substr(at[k], at[k + 1] - at[k]));
    }
    if (count < 0 || done < count) out.append(to);
    return out;
  }
  std::size_t start = 0;
  while (count < 0 || done < count) {
    const std::size_t at = s.find(from, start);
    if (at == std::string_view::npos) break;
    out.append(s.substr(start, at - start)).append(to);
    start = at + from.size();
    ++done;
  }
  out.append(s.substr(start));
  return out;
}

std::string to_upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), upper);
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), lower);
  return out;
}

std::string capitalize(std::string_view s) {
  std::string out = to_lower(s);
  if (!out.empty()) out[0] = upper(out[0]);
  return out;
}

std::string python_title(std::string_view s) {
  std::string out(s);
  bool previous_cased = false;
  for (char& c : out) {
    c = previous_cased ? lower(c) : upper(c);
    previous_cased = is_cased(c);
  }
  return out;
}

std::string jinja_title(std::string_view s) {
  static constexpr std::string_view kWordStart = "-([{< \t\n\r\f\v";
  std::string out(s);
  bool word_start = true;
  for (char& c : out) {
    const bool separator = kWordStart.find(c) != std::string_view::npos;
    if (!separator) c = word_start ? upper(c) : lower(c);
    word_start = separator;
  }
  return out;
}

std::string python_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const char quote = has_single && s.find('"') == std::string_view::npos ? '"' : '\'';
  std::string out(1, quote);
  for (const char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out.push_back('\\'), out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else if (c == '\r') {
      out.append("\\r");
    } else if (c == '\t') {
      out.append("\\t");
    } else if (b < 0x20 || b == 0x7F) {
      out.append(fmt::format("\\x{:02x}", b));
    } else {
      out.push_back(c);
    }
  }
  out.push_back(quote);
  return out;
}

std::string python_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  // The shortest digits that read back as `d`, then Python's choice of notation: positional for
  // decimal exponents in [-4, 16), scientific with a signed two-digit exponent otherwise.
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<std::size_t>(end - buf));
  const std::size_t e_at = sci.find('e');
  std::string digits;
  bool negative = false;
  for (const char c : sci.substr(0, e_at)) {
    if (c == '-') negative = true;
    if (c >= '0' && c <= '9') digits.push_back(c);
  }
  int exponent = 0;
  std::from_chars(sci.data() + e_at + (sci[e_at + 1] == '+' ? 2 : 1), sci.data() + sci.size(),
                  exponent);
  std::string out = negative ? "-" : "";
  const int n = static_cast<int>(digits.size());
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out.append("0.").append(static_cast<std::size_t>(-exponent - 1), '0').append(digits);
    } else if (exponent + 1 >= n) {
      out.append(digits).append(static_cast<std::size_t>(exponent + 1 - n), '0').append(".0");
    } else {
      out.append(digits.substr(0, static_cast<std::size_t>(exponent + 1)))
          .append(".")
          .append(digits.substr(static_cast<std::size_t>(exponent + 1)));
    }
    return out;
  }
  out.push_back(digits[0]);
  if (n > 1) out.append(".").append(digits.substr(1));
  return out + fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
}

void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  for (std::size_t i = 0; i < s.size();) {
    const Decoded d = decode(s, i);
    const std::uint32_t cp = d.code_point;
    switch (cp) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      default:
        if (cp < 0x20) {
          out.append(fmt::format("\\u{:04x}", cp));
        } else if (cp >= 0x80 && ensure_ascii) {
          if (cp >= 0x10000) {
            const std::uint32_t v = cp - 0x10000;
            out.append(fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)));
          } else {
            out.append(fmt::format("\\u{:04x}", cp));
          }
        } else if (cp == 0xFFFD && d.size_bytes == 1) {
          append_utf8(out, cp);  // an invalid byte: JSON text must be valid UTF-8
        } else {
          out.append(s.substr(i, d.size_bytes));
        }
    }
    i += d.size_bytes;
  }
  out.push_back('"');
}

}  // namespace ferry::models::chat
