#include "models/chat/parser.h"

#include <algorithm>
#include <array>

#include "models/chat/token_stream.h"

namespace ferry::models::chat {
namespace {

// Jinja tags outside the subset, refused as Unsupported rather than as unknown.
constexpr std::array<std::string_view, 14> kUnsupportedTags = {
    "macro", "call", "filter", "block",      "extends", "include", "import",
    "from",  "raw",  "with",   "autoescape", "do",      "trans",   "pluralize"};
// Tags that end or divide a block: only valid where an open tag expects them.
constexpr std::array<std::string_view, 7> kClosingTags = {
    "elif", "else", "endif", "endfor", "endset", "endgeneration", "endmacro"};

// The tag a body belongs to, for errors about how it ends.
struct OpenTag {
  std::string_view name;  // "if", "for", ... ; empty at the top level
  std::size_t offset = 0;
};

class Parser {
 public:
  explicit Parser(TokenStream& tokens) : t_(tokens) {}

  std::vector<Stmt> run() {
    std::string ending;
    std::vector<Stmt> body = parse_body(OpenTag{}, {}, ending);
    return body;
  }

 private:
  // Statements up to one of the `terminators` tags (its name is left in `ending`, the rest of the
  // tag unread) or, at the top level, the end of the template.
  std::vector<Stmt> parse_body(const OpenTag& open,
                               std::initializer_list<std::string_view> terminators,
                               std::string& ending) {
    std::vector<Stmt> body;
    while (true) {
      const Token& token = t_.peek();
      switch (token.kind) {
        case TokenKind::kText:
          body.push_back(Stmt{.kind = StmtKind::kText, .offset = token.offset, .text = token.text});
          t_.next();
          break;
        case TokenKind::kVariableBegin: {
          t_.next();
          if (t_.at(TokenKind::kVariableEnd)) t_.syntax_error("empty '{{ }}'");
          Stmt output{.kind = StmtKind::kOutput, .offset = token.offset};
          output.expr = parse_expression(t_);
          if (!t_.at(TokenKind::kVariableEnd)) {
            t_.syntax_error(fmt::format("expected '}}}}' to end the expression, found {}",
                                        TokenStream::describe(t_.peek())));
          }
          t_.next();
          body.push_back(std::move(output));
          break;
        }
        case TokenKind::kBlockBegin: {
          const std::size_t offset = token.offset;
          t_.next();
          const std::string name = t_.expect_name("a tag name after '{%'");
          if (std::find(terminators.begin(), terminators.end(), name) != terminators.end()) {
            ending = name;
            return body;
          }
          tag(name, offset, open, body);
          break;
        }
        case TokenKind::kEnd:
          if (!open.name.empty()) {
            t_.source().fail<CorruptFile>(
                open.offset, fmt::format("'{{% {} %}}' is never closed: expected '{{% {} %}}'",
                                         open.name, *(terminators.end() - 1)));
          }
          return body;
        default: t_.syntax_error(fmt::format("unexpected {}", TokenStream::describe(token)));
      }
    }
  }

  // The tag `name` (already read) opened at `offset`; its statements go to `body`.
  void tag(const std::string& name, std::size_t offset, const OpenTag& open,
           std::vector<Stmt>& body) {
    if (name == "if") return body.push_back(if_tag(offset));
    if (name == "for") return body.push_back(for_tag(offset));
    if (name == "set") return body.push_back(set_tag(offset));
    if (name == "break" || name == "continue") {
      if (loops_ == 0) {
        t_.source().fail<CorruptFile>(offset, fmt::format("'{{% {} %}}' outside a for loop", name));
      }
      t_.expect_block_end();
      return body.push_back(
          Stmt{.kind = name == "break" ? StmtKind::kBreak : StmtKind::kContinue, .offset = offset});
    }
    if (name == "generation") {
      // transformers' marker around assistant text (for training masks): rendered as its body.
      NestingGuard guard(t_);
      t_.expect_block_end();
      std::string ending;
      for (Stmt& s : parse_body(OpenTag{"generation", offset}, {"endgeneration"}, ending)) {
        body.push_back(std::move(s));
      }
      t_.expect_block_end();
      return;
    }
    if (std::find(kUnsupportedTags.begin(), kUnsupportedTags.end(), name) !=
        kUnsupportedTags.end()) {
      t_.source().fail<Unsupported>(offset, fmt::format("unsupported tag '{{% {} %}}'", name));
    }
    if (std::find(kClosingTags.begin(), kClosingTags.end(), name) != kClosingTags.end()) {
      if (open.name.empty()) {
        t_.source().fail<CorruptFile>(offset,
                                      fmt::format("'{{% {} %}}' without an open tag", name));
      }
      t_.source().fail<CorruptFile>(
          offset, fmt::format("unexpected '{{% {} %}}' in '{{% {} %}}' opened at {}", name,
                              open.name, t_.source().position(open.offset)));
    }
    t_.source().fail<Unsupported>(offset, fmt::format("unknown tag '{{% {} %}}'", name));
  }

  Stmt if_tag(std::size_t offset) {
    NestingGuard guard(t_);
    Stmt s{.kind = StmtKind::kIf, .offset = offset};
    s.conditions.push_back(parse_expression(t_));
    t_.expect_block_end();
    while (true) {
      std::string ending;
      s.branches.push_back(parse_body(OpenTag{"if", offset}, {"elif", "else", "endif"}, ending));
      if (ending == "elif") {
        s.conditions.push_back(parse_expression(t_));
        t_.expect_block_end();
        continue;
      }
      t_.expect_block_end();
      if (ending == "else") {
        s.else_body = parse_body(OpenTag{"if", offset}, {"endif"}, ending);
        t_.expect_block_end();
      }
      return s;
    }
  }

  Stmt for_tag(std::size_t offset) {
    NestingGuard guard(t_);
    Stmt s{.kind = StmtKind::kFor, .offset = offset};
    s.targets.push_back(t_.expect_name("a loop variable after 'for'"));
    while (t_.at_operator(",")) {
      t_.next();
      s.targets.push_back(t_.expect_name("a loop variable after ','"));
    }
    if (!t_.at_name("in")) {
      t_.syntax_error(fmt::format("expected 'in' after the loop variables, found {}",
                                  TokenStream::describe(t_.peek())));
    }
    t_.next();
    s.expr = parse_expression(t_, /*allow_condition=*/false);
    if (t_.at_name("if")) {
      t_.next();
      s.filter = parse_expression(t_);
    }
    if (t_.at_name("recursive")) t_.unsupported("recursive loops are not supported");
    t_.expect_block_end();
    std::string ending;
    ++loops_;
    s.body = parse_body(OpenTag{"for", offset}, {"else", "endfor"}, ending);
    --loops_;
    t_.expect_block_end();
    if (ending == "else") {
      // The else body runs when nothing was iterated: not inside the loop.
      const int loops = std::exchange(loops_, 0);
      s.else_body = parse_body(OpenTag{"for", offset}, {"endfor"}, ending);
      loops_ = loops;
      t_.expect_block_end();
    }
    return s;
  }

  Stmt set_tag(std::size_t offset) {
    NestingGuard guard(t_);
    Stmt s{.kind = StmtKind::kSet, .offset = offset};
    s.targets.push_back(t_.expect_name("a variable name after 'set'"));
    if (t_.at_operator(".")) {
      t_.next();
      s.kind = StmtKind::kSetAttr;
      s.targets.push_back(t_.expect_name("an attribute name after '.'"));
    } else {
      while (t_.at_operator(",")) {
        t_.next();
        s.targets.push_back(t_.expect_name("a variable name after ','"));
      }
    }
    if (!t_.at_operator("=")) {
      if (s.kind != StmtKind::kSet || s.targets.size() != 1) t_.syntax_error("expected '='");
      if (t_.at_operator("|")) t_.unsupported("filters on a '{% set %}' block are not supported");
      t_.expect_block_end();
      s.kind = StmtKind::kSetBlock;
      std::string ending;
      s.body = parse_body(OpenTag{"set", offset}, {"endset"}, ending);
      t_.expect_block_end();
      return s;
    }
    t_.next();
    const std::size_t begin = t_.peek().offset;
    s.expr = parse_expression(t_);
    if (t_.at_operator(",")) {  // set a, b = 1, 2: the values as a list
      auto list = std::make_unique<Expr>();
      list->kind = ExprKind::kList;
      list->operands.push_back(std::move(s.expr));
      while (t_.at_operator(",")) {
        t_.next();
        list->operands.push_back(parse_expression(t_));
      }
      list->begin = begin;
      list->end = t_.last_end();
      for (const auto& operand : list->operands)
        list->depth = std::max(list->depth, operand->depth + 1);
      s.expr = std::move(list);
    }
    t_.expect_block_end();
    return s;
  }

  TokenStream& t_;
  int loops_ = 0;  // for loops around the current position
};

}  // namespace

std::vector<Stmt> parse_template(const Source& source) {
  TokenStream tokens(source, tokenize(source));
  return Parser(tokens).run();
}

}  // namespace ferry::models::chat
