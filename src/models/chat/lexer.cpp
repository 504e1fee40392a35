#include "models/chat/lexer.h"

#include <fmt/format.h>

#include <array>
#include <charconv>

#include "ferry/core/error.h"
#include "models/chat/text.h"

namespace ferry::models::chat {
namespace {

// Jinja's `\s` for whitespace control and between tokens.
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr std::array<std::string_view, 6> kTwoCharOperators = {"//", "**", "==", "!=", "<=", ">="};
constexpr std::string_view kOneCharOperators = "+-*/%~<>=()[]{},.:|";

class Lexer {
 public:
  explicit Lexer(const Source& source) : source_(source), s_(source.text) {}

  std::vector<Token> run() {
    while (pos_ < s_.size()) {
      const std::size_t tag = find_tag(pos_);
      if (tag == std::string_view::npos) {
        emit_text(s_.size(), s_.size());
        break;
      }
      const char kind = s_[tag + 1];
      const char marker = tag + 2 < s_.size() ? s_[tag + 2] : '\0';
      const bool block_like = kind != '{';  // a block or a comment
      emit_text(tag, text_end(tag, marker, block_like));
      if (kind == '#') {
        skip_comment(tag, marker);
      } else {
        tag_tokens(tag, marker, /*block=*/kind == '%');
      }
    }
    tokens_.push_back(Token{.kind = TokenKind::kEnd, .offset = s_.size()});
    return std::move(tokens_);
  }

 private:
  // The first "{{", "{%" or "{#" at or after `from`.
  std::size_t find_tag(std::size_t from) const {
    for (std::size_t i = s_.find('{', from); i != std::string_view::npos; i = s_.find('{', i + 1)) {
      if (i + 1 < s_.size() && (s_[i + 1] == '{' || s_[i + 1] == '%' || s_[i + 1] == '#')) return i;
    }
    return std::string_view::npos;
  }

  // Where the text before the tag at `tag` ends once whitespace control took its part.
  std::size_t text_end(std::size_t tag, char marker, bool block_like) const {
    std::size_t end = tag;
    if (marker == '-') {
      while (end > pos_ && is_space(s_[end - 1])) --end;
    } else if (block_like && marker != '+') {
      // lstrip_blocks: only spaces and tabs, and only back to the start of a line.
      while (end > pos_ && (s_[end - 1] == ' ' || s_[end - 1] == '\t')) --end;
      if (end != 0 && s_[end - 1] != '\n') end = tag;
    }
    return end;
  }

  void emit_text(std::size_t next, std::size_t end) {
    if (end > pos_) {
      tokens_.push_back(Token{.kind = TokenKind::kText,
                              .offset = pos_,
                              .text = std::string(s_.substr(pos_, end - pos_))});
    }
    pos_ = next;
  }

  // Skips the whitespace a tag's closing side asks to: all of it after '-', else (trim_blocks)
  // one newline after a block or comment unless '+'.
  void after_tag(char marker, bool block_like) {
    if (marker == '-') {
      while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
    } else if (block_like && marker != '+' && pos_ < s_.size() && s_[pos_] == '\n') {
      ++pos_;
    }
  }

  void skip_comment(std::size_t tag, char marker) {
    const std::size_t start = tag + 2 + (marker == '-' || marker == '+' ? 1 : 0);
    const std::size_t close = s_.find("#}", start);
    if (close == std::string_view::npos) {
      source_.fail<CorruptFile>(tag, "comment '{#' is never closed with '#}'");
    }
    const char end_marker = close > start ? s_[close - 1] : '\0';
    pos_ = close + 2;
    after_tag(end_marker, /*block_like=*/true);
  }

  void tag_tokens(std::size_t tag, char marker, bool block) {
    tokens_.push_back(
        Token{.kind = block ? TokenKind::kBlockBegin : TokenKind::kVariableBegin, .offset = tag});
    pos_ = tag + 2 + (marker == '-' || (block && marker == '+') ? 1 : 0);
    const std::string_view close = block ? "%}" : "}}";
    int brackets = 0;  // a '}' closes the tag only outside brackets: {{ {'a': {'b': 1}} }}
    while (true) {
      while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
      if (pos_ >= s_.size()) {
        source_.fail<CorruptFile>(
            tag, fmt::format("tag '{}' is never closed with '{}'", block ? "{%" : "{{", close));
      }
      const std::string_view rest = s_.substr(pos_);
      if (brackets == 0) {
        char end_marker = '\0';
        if ((rest.starts_with('-') || (block && rest.starts_with('+'))) &&
            rest.substr(1).starts_with(close)) {
          end_marker = rest[0];
        }
        if (end_marker != '\0' || rest.starts_with(close)) {
          tokens_.push_back(Token{.kind = block ? TokenKind::kBlockEnd : TokenKind::kVariableEnd,
                                  .offset = pos_});
          pos_ += close.size() + (end_marker != '\0' ? 1 : 0);
          after_tag(end_marker, block);
          return;
        }
      }
      const char c = rest[0];
      if (is_name_start(c)) {
        name();
      } else if (is_digit(c)) {
        number();
      } else if (c == '\'' || c == '"') {
        string();
      } else {
        operator_token(brackets);
      }
    }
  }

  void name() {
    const std::size_t start = pos_;
    while (pos_ < s_.size() && is_name_char(s_[pos_])) ++pos_;
    tokens_.push_back(Token{.kind = TokenKind::kName,
                            .offset = start,
                            .end = pos_,
                            .text = std::string(s_.substr(start, pos_ - start))});
  }

  // Digits with single '_' between them, appended to `out` without the underscores.
  bool digits(std::string& out) {
    if (pos_ >= s_.size() || !is_digit(s_[pos_])) return false;
    while (pos_ < s_.size()) {
      if (is_digit(s_[pos_])) {
        out.push_back(s_[pos_++]);
      } else if (s_[pos_] == '_' && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1])) {
        ++pos_;
      } else {
        break;
      }
    }
    return true;
  }

  void number() {
    const std::size_t start = pos_;
    std::string text;
    digits(text);
    bool is_float = false;
    if (pos_ + 1 < s_.size() && s_[pos_] == '.' && is_digit(s_[pos_ + 1])) {
      text.push_back(s_[pos_++]);
      digits(text);
      is_float = true;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      const std::size_t mark = pos_;
      std::string exponent = "e";
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) exponent.push_back(s_[pos_++]);
      if (digits(exponent)) {
        text += exponent;
        is_float = true;
      } else {
        pos_ = mark;  // not an exponent: `1e` is 1 then the name e
      }
    }
    Token token{
        .kind = is_float ? TokenKind::kFloat : TokenKind::kInteger, .offset = start, .end = pos_};
    const char* first = text.data();
    const char* last = text.data() + text.size();
    const auto result = is_float ? std::from_chars(first, last, token.floating)
                                 : std::from_chars(first, last, token.integer);
    if (result.ec == std::errc::result_out_of_range && !is_float) {
      source_.fail<Unsupported>(start, fmt::format("integer {} does not fit 64 bits", text));
    }
    if (result.ec != std::errc() || result.ptr != last) {
      source_.fail<CorruptFile>(start, fmt::format("malformed number '{}'", text));
    }
    tokens_.push_back(std::move(token));
  }

  // `count` hexadecimal digits after an escape at s_[at]; -1 when they are not there.
  std::int64_t hex_digits(std::size_t from, int count) const {
    std::int64_t value = 0;
    for (int k = 0; k < count; ++k) {
      const std::size_t i = from + static_cast<std::size_t>(k);
      const int h = i < s_.size() ? hex_value(s_[i]) : -1;
      if (h < 0) return -1;
      value = value * 16 + h;
    }
    return value;
  }

  void string() {
    const std::size_t start = pos_;
    const char quote = s_[pos_++];
    std::string value;
    std::uint32_t high_surrogate = 0;  // a \uD8xx waiting for its \uDCxx
    auto flush_surrogate = [&] {
      if (high_surrogate != 0) append_utf8(value, 0xFFFD), high_surrogate = 0;
    };
    while (true) {
      if (pos_ >= s_.size()) source_.fail<CorruptFile>(start, "string is never closed");
      const char c = s_[pos_];
      if (c == quote) {
        ++pos_;
        break;
      }
      if (c != '\\' || pos_ + 1 >= s_.size()) {
        flush_surrogate();
        value.push_back(c);
        ++pos_;
        continue;
      }
      const char e = s_[pos_ + 1];
      pos_ += 2;
      int hex_count = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
      if (hex_count > 0) {
        const std::int64_t cp = hex_digits(pos_, hex_count);
        if (cp < 0) {
          source_.fail<CorruptFile>(pos_ - 2, fmt::format("malformed \\{} escape in a string", e));
        }
        pos_ += static_cast<std::size_t>(hex_count);
        if (cp >= 0xDC00 && cp <= 0xDFFF && high_surrogate != 0) {
          append_utf8(value, 0x10000 + ((high_surrogate - 0xD800) << 10) +
                                 static_cast<std::uint32_t>(cp - 0xDC00));
          high_surrogate = 0;
          continue;
        }
        flush_surrogate();
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          high_surrogate = static_cast<std::uint32_t>(cp);
        } else {
          append_utf8(value, static_cast<std::uint32_t>(std::min<std::int64_t>(cp, 0x110000)));
        }
        continue;
      }
      flush_surrogate();
      if (e >= '0' && e <= '7') {
        std::uint32_t cp = static_cast<std::uint32_t>(e - '0');
        for (int k = 0; k < 2 && pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '7'; ++k) {
          cp = cp * 8 + static_cast<std::uint32_t>(s_[pos_++] - '0');
        }
        append_utf8(value, cp);
        continue;
      }
      switch (e) {
        case '\n': break;  // a line continuation
        case '\\': value.push_back('\\'); break;
        case '\'': value.push_back('\''); break;
        case '"': value.push_back('"'); break;
        case 'a': value.push_back('\a'); break;
        case 'b': value.push_back('\b'); break;
        case 'f': value.push_back('\f'); break;
        case 'n': value.push_back('\n'); break;
        case 'r': value.push_back('\r'); break;
        case 't': value.push_back('\t'); break;
        case 'v': value.push_back('\v'); break;
        default: value.push_back('\\'), value.push_back(e); break;  // kept, as Python does
      }
    }
    flush_surrogate();
    tokens_.push_back(
        Token{.kind = TokenKind::kString, .offset = start, .end = pos_, .text = std::move(value)});
  }

  void operator_token(int& brackets) {
    const std::string_view rest = s_.substr(pos_);
    std::string_view op;
    for (const std::string_view two : kTwoCharOperators) {
      if (rest.starts_with(two)) op = two;
    }
    if (op.empty() && kOneCharOperators.find(rest[0]) != std::string_view::npos) {
      op = rest.substr(0, 1);
    }
    if (op.empty()) {
      const auto b = static_cast<unsigned char>(rest[0]);
      source_.fail<CorruptFile>(pos_, b < 0x20 || b >= 0x7F
                                          ? fmt::format("unexpected byte 0x{:02x}", b)
                                          : fmt::format("unexpected character '{}'", rest[0]));
    }
    if (op == "(" || op == "[" || op == "{") ++brackets;
    if ((op == ")" || op == "]" || op == "}") && brackets > 0) --brackets;
    tokens_.push_back(Token{.kind = TokenKind::kOperator,
                            .offset = pos_,
                            .end = pos_ + op.size(),
                            .text = std::string(op)});
    pos_ += op.size();
  }

  const Source& source_;
  std::string_view s_;
  std::size_t pos_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(const Source& source) { return Lexer(source).run(); }

}  // namespace ferry::models::chat
