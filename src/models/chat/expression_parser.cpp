// Expressions, with Jinja's precedence from loosest to tightest: `a if c else b`, or, and, not,
// comparisons and `in`, + -, ~, * / // %, **, unary - +, then postfix `.name`, `[...]`, calls,
// and the filters and tests that follow a unary expression.
#include <algorithm>
#include <array>

#include "models/chat/builtins.h"
#include "models/chat/token_stream.h"

namespace ferry::models::chat {
namespace {

using ExprPtr = std::unique_ptr<Expr>;

// Jinja's names that a template may use but that ferry does not provide.
constexpr std::array<std::string_view, 6> kUnsupportedFunctions = {"cycler", "joiner", "lipsum",
                                                                   "caller", "super",  "self"};

class ExpressionParser {
 public:
  explicit ExpressionParser(TokenStream& tokens) : t_(tokens) {}

  ExprPtr expression(bool allow_condition) {
    NestingGuard guard(t_);
    const std::size_t begin = t_.peek().offset;
    ExprPtr e = or_expr();
    while (allow_condition && t_.at_name("if")) {
      t_.next();
      ExprPtr condition = or_expr();
      ExprPtr otherwise;
      if (t_.at_name("else")) {
        t_.next();
        otherwise = expression(/*allow_condition=*/true);
      }
      e = node(ExprKind::kCondition, begin, std::move(e), std::move(condition),
               std::move(otherwise));
    }
    return e;
  }

 private:
  // A node over `operands` spanning the source from `begin` to the last token taken; refused
  // when it would nest deeper than kMaxNesting.
  template <class... Operands>
  ExprPtr node(ExprKind kind, std::size_t begin, Operands&&... operands) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    (e->operands.push_back(std::forward<Operands>(operands)), ...);
    return finish(std::move(e), begin);
  }

  ExprPtr finish(ExprPtr e, std::size_t begin) {
    e->begin = begin;
    e->end = t_.last_end();
    for (const ExprPtr& operand : e->operands) {
      if (operand) e->depth = std::max(e->depth, operand->depth + 1);
    }
    if (e->depth > kMaxNesting) {
      t_.source().fail<Unsupported>(
          begin, fmt::format("expression nested more than {} levels deep", kMaxNesting));
    }
    return e;
  }

  ExprPtr or_expr() {
    const std::size_t begin = t_.peek().offset;
    ExprPtr e = and_expr();
    while (t_.at_name("or")) {
      t_.next();
      e = node(ExprKind::kOr, begin, std::move(e), and_expr());
    }
    return e;
  }

  ExprPtr and_expr() {
    const std::size_t begin = t_.peek().offset;
    ExprPtr e = not_expr();
    while (t_.at_name("and")) {
      t_.next();
      e = node(ExprKind::kAnd, begin, std::move(e), not_expr());
    }
    return e;
  }

  ExprPtr not_expr() {
    if (!t_.at_name("not")) return compare();
    NestingGuard guard(t_);
    const std::size_t begin = t_.next().offset;
    return node(ExprKind::kNot, begin, not_expr());
  }

  std::optional<CompareOp> compare_op() const {
    static constexpr std::pair<std::string_view, CompareOp> kOps[] = {
        {"==", CompareOp::kEqual},  {"!=", CompareOp::kNotEqual},
        {"<", CompareOp::kLess},    {"<=", CompareOp::kLessEqual},
        {">", CompareOp::kGreater}, {">=", CompareOp::kGreaterEqual}};
    for (const auto& [text, op] : kOps) {
      if (t_.at_operator(text)) return op;
    }
    if (t_.at_name("in")) return CompareOp::kIn;
    if (t_.at_name("not") && t_.at_name("in", 1)) return CompareOp::kNotIn;
    return std::nullopt;
  }

  ExprPtr compare() {
    const std::size_t begin = t_.peek().offset;
    ExprPtr first = sum();
    if (!compare_op()) return first;
    auto e = std::make_unique<Expr>();
    e->kind = ExprKind::kCompare;
    e->operands.push_back(std::move(first));
    while (const auto op = compare_op()) {
      t_.next();
      if (*op == CompareOp::kNotIn) t_.next();
      e->compare_ops.push_back(*op);
      e->operands.push_back(sum());
    }
    return finish(std::move(e), begin);
  }

  ExprPtr sum() {
    const std::size_t begin = t_.peek().offset;
    ExprPtr e = concat();
    while (t_.at_operator("+") || t_.at_operator("-")) {
      const bool add = t_.next().text == "+";
      e = binary(add ? BinaryOp::kAdd : BinaryOp::kSubtract, begin, std::move(e), concat());
    }
    return e;
  }

  ExprPtr concat() {
    const std::size_t begin = t_.peek().offset;
    ExprPtr first = product();
    if (!t_.at_operator("~")) return first;
    auto e = std::make_unique<Expr>();
    e->kind = ExprKind::kConcat;
    e->operands.push_back(std::move(first));
    while (t_.at_operator("~")) {
      t_.next();
      e->operands.push_back(product());
    }
    return finish(std::move(e), begin);
  }

  ExprPtr product() {
    static constexpr std::pair<std::string_view, BinaryOp> kOps[] = {{"*", BinaryOp::kMultiply},
                                                                     {"/", BinaryOp::kDivide},
                                                                     {"//", BinaryOp::kFloorDivide},
                                                                     {"%", BinaryOp::kModulo}};
    const std::size_t begin = t_.peek().offset;
    ExprPtr e = power();
    while (true) {
      const auto it = std::find_if(std::begin(kOps), std::end(kOps),
                                   [&](const auto& op) { return t_.at_operator(op.first); });
      if (it == std::end(kOps)) return e;
      t_.next();
      e = binary(it->second, begin, std::move(e), power());
    }
  }

  ExprPtr power() {
    const std::size_t begin = t_.peek().offset;
    ExprPtr e = unary(/*with_filters=*/true);
    while (t_.at_operator("**")) {
      t_.next();
      e = binary(BinaryOp::kPower, begin, std::move(e), unary(/*with_filters=*/true));
    }
    return e;
  }

  ExprPtr binary(BinaryOp op, std::size_t begin, ExprPtr a, ExprPtr b) {
    ExprPtr e = node(ExprKind::kBinary, begin, std::move(a), std::move(b));
    e->binary_op = op;
    return e;
  }

  // As Jinja: `-x|f` is `(-x)|f`, the filters applying to the whole unary expression.
  ExprPtr unary(bool with_filters) {
    const std::size_t begin = t_.peek().offset;
    ExprPtr e;
    if (t_.at_operator("-") || t_.at_operator("+")) {
      NestingGuard guard(t_);
      const bool negate = t_.next().text == "-";
      e = node(negate ? ExprKind::kNegate : ExprKind::kPlus, begin, unary(/*with_filters=*/false));
    } else {
      e = primary();
    }
    e = postfix(std::move(e), begin);
    return with_filters ? filters_and_tests(std::move(e), begin) : std::move(e);
  }

  ExprPtr literal(Json value, std::size_t begin) {
    auto e = std::make_unique<Expr>();
    e->kind = ExprKind::kLiteral;
    e->literal = Value(std::move(value));
    return finish(std::move(e), begin);
  }

  ExprPtr primary() {
    const Token& token = t_.peek();
    const std::size_t begin = token.offset;
    switch (token.kind) {
      case TokenKind::kName: return name();
      case TokenKind::kString: {
        std::string text;
        while (t_.at(TokenKind::kString)) text += t_.next().text;  // "a" "b" is "ab"
        return literal(Json(std::move(text)), begin);
      }
      case TokenKind::kInteger: return literal(Json(t_.next().integer), begin);
      case TokenKind::kFloat: return literal(Json(t_.next().floating), begin);
      default: break;
    }
    if (t_.at_operator("(")) {
      t_.next();
      std::vector<ExprPtr> items;
      bool tuple = t_.at_operator(")");
      while (!t_.at_operator(")")) {
        items.push_back(expression(/*allow_condition=*/true));
        if (!t_.at_operator(",")) break;
        t_.next();
        tuple = true;
      }
      t_.expect_operator(")");
      if (!tuple) return std::move(items.front());
      return sequence(ExprKind::kList, std::move(items), begin);
    }
    if (t_.at_operator("[")) {
      t_.next();
      std::vector<ExprPtr> items;
      while (!t_.at_operator("]")) {
        items.push_back(expression(/*allow_condition=*/true));
        if (!t_.at_operator(",")) break;
        t_.next();
      }
      t_.expect_operator("]");
      return sequence(ExprKind::kList, std::move(items), begin);
    }
    if (t_.at_operator("{")) {
      t_.next();
      std::vector<ExprPtr> items;
      while (!t_.at_operator("}")) {
        items.push_back(expression(/*allow_condition=*/true));
        t_.expect_operator(":");
        items.push_back(expression(/*allow_condition=*/true));
        if (!t_.at_operator(",")) break;
        t_.next();
      }
      t_.expect_operator("}");
      return sequence(ExprKind::kDict, std::move(items), begin);
    }
    t_.syntax_error(fmt::format("expected an expression, found {}", TokenStream::describe(token)));
  }

  ExprPtr sequence(ExprKind kind, std::vector<ExprPtr> items, std::size_t begin) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->operands = std::move(items);
    return finish(std::move(e), begin);
  }

  ExprPtr name() {
    const Token& token = t_.next();
    const std::size_t begin = token.offset;
    const std::string& n = token.text;
    if (n == "true" || n == "True") return literal(Json(true), begin);
    if (n == "false" || n == "False") return literal(Json(false), begin);
    if (n == "none" || n == "None") return literal(Json(), begin);
    if (!t_.at_operator("(")) {
      auto e = std::make_unique<Expr>();
      e->kind = ExprKind::kName;
      e->name = n;
      return finish(std::move(e), begin);
    }
    const Builtin* function = find_builtin(BuiltinKind::kFunction, n);
    if (function == nullptr) {
      const bool jinja = std::find(kUnsupportedFunctions.begin(), kUnsupportedFunctions.end(), n) !=
                         kUnsupportedFunctions.end();
      t_.source().fail<Unsupported>(
          begin, fmt::format("{} function '{}'", jinja ? "unsupported" : "unknown", n));
    }
    auto e = std::make_unique<Expr>();
    e->kind = ExprKind::kCall;
    return builtin_call(std::move(e), function, begin, /*has_arguments=*/true);
  }

  // Parses "(args...)" into e's operands and arg_names.
  void arguments(Expr& e) {
    t_.expect_operator("(");
    while (!t_.at_operator(")")) {
      if (t_.at_operator("*") || t_.at_operator("**"))
        t_.unsupported("'*args' and '**kwargs' are not supported");
      if (t_.at(TokenKind::kName) && t_.at_operator("=", 1)) {
        e.arg_names.push_back(t_.next().text);
        t_.next();
      } else {
        if (!e.arg_names.empty() && !e.arg_names.back().empty()) {
          t_.syntax_error("a positional argument after a keyword argument");
        }
        e.arg_names.emplace_back();
      }
      e.operands.push_back(expression(/*allow_condition=*/true));
      if (!t_.at_operator(",")) break;
      t_.next();
    }
    t_.expect_operator(")");
  }

  // Binds a filter, test or function call's arguments (parsed here when `has_arguments`).
  ExprPtr builtin_call(ExprPtr e, const Builtin* builtin, std::size_t begin, bool has_arguments) {
    const std::size_t at = t_.peek().offset;
    if (has_arguments) arguments(*e);
    e->builtin = builtin;
    e->name = std::string(builtin->name);
    try {
      e->arg_slots = bind_arguments(*builtin, e->arg_names);
    } catch (const EvalError& error) {
      t_.source().fail<CorruptFile>(at, error.what());
    }
    return finish(std::move(e), begin);
  }

  ExprPtr postfix(ExprPtr e, std::size_t begin) {
    while (true) {
      if (t_.at_operator(".")) {
        t_.next();
        if (t_.at(TokenKind::kInteger)) {  // a.0 is a[0]
          const Token& index = t_.next();
          ExprPtr key = literal(Json(index.integer), index.offset);
          e = node(ExprKind::kItem, begin, std::move(e), std::move(key));
          continue;
        }
        const std::size_t name_at = t_.peek().offset;
        std::string attribute = t_.expect_name("an attribute name after '.'");
        if (!t_.at_operator("(")) {
          e = node(ExprKind::kAttribute, begin, std::move(e));
          e->name = std::move(attribute);
          continue;
        }
        if (!is_method_name(attribute)) {
          t_.source().fail<Unsupported>(name_at, fmt::format("unknown method '{}'", attribute));
        }
        auto call = std::make_unique<Expr>();
        call->kind = ExprKind::kMethod;
        call->name = std::move(attribute);
        call->operands.push_back(std::move(e));
        arguments(*call);
        e = finish(std::move(call), begin);
      } else if (t_.at_operator("[")) {
        t_.next();
        e = subscript(std::move(e), begin);
      } else if (t_.at_operator("(")) {
        t_.unsupported("only filters, tests, the global functions and methods can be called");
      } else {
        return e;
      }
    }
  }

  // After "[": an index or a slice, then "]".
  ExprPtr subscript(ExprPtr e, std::size_t begin) {
    ExprPtr start = t_.at_operator(":") ? nullptr : expression(/*allow_condition=*/true);
    if (!t_.at_operator(":")) {
      t_.expect_operator("]");
      return node(ExprKind::kItem, begin, std::move(e), std::move(start));
    }
    t_.next();
    ExprPtr stop = t_.at_operator(":") || t_.at_operator("]") ? nullptr : expression(true);
    ExprPtr step;
    if (t_.at_operator(":")) {
      t_.next();
      if (!t_.at_operator("]")) step = expression(/*allow_condition=*/true);
    }
    t_.expect_operator("]");
    return node(ExprKind::kSlice, begin, std::move(e), std::move(start), std::move(stop),
                std::move(step));
  }

  // Whether the token starts the single argument of a test written without parentheses
  // (`x is divisibleby 3`, `x is equalto 'a'`).
  bool at_bare_test_argument() const {
    if (t_.at(TokenKind::kName)) {
      static constexpr std::string_view kStop[] = {"else", "or", "and", "if", "is", "not", "in"};
      return std::find(std::begin(kStop), std::end(kStop), t_.peek().text) == std::end(kStop);
    }
    return t_.at(TokenKind::kString) || t_.at(TokenKind::kInteger) || t_.at(TokenKind::kFloat) ||
           t_.at_operator("[") || t_.at_operator("{");
  }

  ExprPtr filters_and_tests(ExprPtr e, std::size_t begin) {
    while (true) {
      if (t_.at_operator("|")) {
        t_.next();
        const std::size_t name_at = t_.peek().offset;
        const std::string& name = t_.expect_name("a filter name after '|'");
        const Builtin* filter = find_builtin(BuiltinKind::kFilter, name);
        if (filter == nullptr) {
          t_.source().fail<Unsupported>(name_at, fmt::format("unsupported filter '{}'", name));
        }
        auto call = std::make_unique<Expr>();
        call->kind = ExprKind::kFilter;
        call->operands.push_back(std::move(e));
        e = builtin_call(std::move(call), filter, begin, t_.at_operator("("));
      } else if (t_.at_name("is")) {
        t_.next();
        auto call = std::make_unique<Expr>();
        call->kind = ExprKind::kTest;
        call->negated = t_.at_name("not");
        if (call->negated) t_.next();
        const std::size_t name_at = t_.peek().offset;
        std::string name;
        if (t_.at(TokenKind::kName)) {
          name = t_.next().text;
        } else {
          t_.syntax_error(fmt::format("expected a test name after 'is', found {}",
                                      TokenStream::describe(t_.peek())));
        }
        const Builtin* test = find_builtin(BuiltinKind::kTest, name);
        if (test == nullptr) {
          t_.source().fail<Unsupported>(name_at, fmt::format("unsupported test '{}'", name));
        }
        call->operands.push_back(std::move(e));
        const bool parenthesised = t_.at_operator("(");
        if (!parenthesised && at_bare_test_argument()) {
          const std::size_t arg_begin = t_.peek().offset;
          call->operands.push_back(postfix(primary(), arg_begin));
          call->arg_names.emplace_back();
        }
        e = builtin_call(std::move(call), test, begin, parenthesised);
      } else {
        return e;
      }
    }
  }

  TokenStream& t_;
};

}  // namespace

std::unique_ptr<Expr> parse_expression(TokenStream& tokens, bool allow_condition) {
  return ExpressionParser(tokens).expression(allow_condition);
}

}  // namespace ferry::models::chat
