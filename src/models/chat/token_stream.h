#pragma once
// The parser's cursor over tokens, with the checks and errors both halves of the parser share.

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/core/error.h"
#include "models/chat/lexer.h"

namespace ferry::models::chat {

class TokenStream {
 public:
  TokenStream(const Source& source, std::vector<Token> tokens)
      : source_(source), tokens_(std::move(tokens)) {}

  const Source& source() const { return source_; }
  // The token `ahead` places on (the last, kEnd, past the end).
  const Token& peek(std::size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& next() {
    const Token& t = peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    last_end_ = t.end;
    return t;
  }
  // The source offset just past the last token taken.
  std::size_t last_end() const { return last_end_; }
  // How deep the parser is in nested tags and sub-expressions (NestingGuard counts it).
  int& nesting() { return nesting_; }

  bool at(TokenKind kind, std::size_t ahead = 0) const { return peek(ahead).kind == kind; }
  bool at_operator(std::string_view op, std::size_t ahead = 0) const {
    return at(TokenKind::kOperator, ahead) && peek(ahead).text == op;
  }
  bool at_name(std::string_view name, std::size_t ahead = 0) const {
    return at(TokenKind::kName, ahead) && peek(ahead).text == name;
  }

  void expect_operator(std::string_view op) {
    if (!at_operator(op))
      syntax_error(fmt::format("expected '{}', found {}", op, describe(peek())));
    next();
  }
  const std::string& expect_name(std::string_view what) {
    if (!at(TokenKind::kName))
      syntax_error(fmt::format("expected {}, found {}", what, describe(peek())));
    return next().text;
  }
  void expect_block_end() {
    if (!at(TokenKind::kBlockEnd)) {
      syntax_error(fmt::format("expected '%}}' to end the tag, found {}", describe(peek())));
    }
    next();
  }

  // A CorruptFile (syntax) or Unsupported error at the current token.
  [[noreturn]] void syntax_error(const std::string& message) const {
    source_.fail<CorruptFile>(peek().offset, message);
  }
  [[noreturn]] void unsupported(const std::string& message) const {
    source_.fail<Unsupported>(peek().offset, message);
  }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::kText: return "text";
      case TokenKind::kVariableBegin: return "'{{'";
      case TokenKind::kVariableEnd: return "'}}'";
      case TokenKind::kBlockBegin: return "'{%'";
      case TokenKind::kBlockEnd: return "'%}'";
      case TokenKind::kString: return "a string";
      case TokenKind::kInteger:
      case TokenKind::kFloat: return "a number";
      case TokenKind::kEnd: return "the end of the template";
      default: return fmt::format("'{}'", t.text);
    }
  }

 private:
  const Source& source_;
  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  std::size_t last_end_ = 0;
  int nesting_ = 0;
};

// Counts one level of the stream's nesting for its lifetime; past kMaxNesting, Unsupported.
class NestingGuard {
 public:
  explicit NestingGuard(TokenStream& tokens) : depth_(tokens.nesting()) {
    if (depth_ >= kMaxNesting) {
      tokens.unsupported(fmt::format("nested more than {} levels deep", kMaxNesting));
    }
    ++depth_;
  }
  ~NestingGuard() { --depth_; }
  NestingGuard(const NestingGuard&) = delete;
  NestingGuard& operator=(const NestingGuard&) = delete;

 private:
  int& depth_;
};

// Parses one expression (with `a if b else c` when `allow_condition`) at the stream's position.
std::unique_ptr<Expr> parse_expression(TokenStream& tokens, bool allow_condition = true);

}  // namespace ferry::models::chat
