#pragma once
// Splits a chat template into text and the tokens of its tags, applying whitespace control as
// transformers configures Jinja: trim_blocks (the newline after a block or comment tag is
// dropped), lstrip_blocks (spaces and tabs from the start of a line to a block or comment tag are
// dropped), `-` on a tag side (all whitespace on that side dropped) and `+` (neither rule there).
// Comments are dropped here.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "models/chat/syntax.h"

namespace ferry::models::chat {

enum class TokenKind {
  kText,           // text between tags, whitespace control applied
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,    // text: the value, escapes decoded
  kInteger,   // integer
  kFloat,     // floating
  kOperator,  // text: + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } , . : |
  kEnd,       // end of the template
};

struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::size_t offset = 0;  // source bytes [offset, end)
  std::size_t end = 0;
  std::string text;
  std::int64_t integer = 0;
  double floating = 0;
};

// Throws CorruptFile at the first malformed token or unclosed tag.
std::vector<Token> tokenize(const Source& source);

}  // namespace ferry::models::chat
