#pragma once
// The syntax tree of a chat template, and the source text it came from (for error positions).

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/core/error.h"
#include "models/chat/value.h"

namespace ferry::models::chat {

// Statements and expressions nested deeper than this are refused when parsing, so parsing and
// rendering recurse a bounded depth whatever the template.
inline constexpr int kMaxNesting = 100;

// A template's text and its name for error messages.
struct Source {
  // As Jinja reads a template: every line ending made "\n", and one newline at the end dropped.
  Source(std::string_view raw_text, std::string origin_name);

  std::string text;
  std::string origin;

  // "<line>:<column>" of the byte at `offset`; columns count code points from 1.
  std::string position(std::size_t offset) const;
  // "<origin> at <line>:<column>".
  std::string where(std::size_t offset) const;
  // Throws E with "<where(offset)>: <message>" and the origin as the error's file.
  template <class E>
  [[noreturn]] void fail(std::size_t offset, const std::string& message) const;
};

struct Builtin;  // a filter, test or global function (builtins.h)

enum class ExprKind {
  kLiteral,    // literal
  kName,       // name
  kList,       // [operands...]
  kDict,       // {operands[0]: operands[1], ...}
  kAttribute,  // operands[0].name
  kItem,       // operands[0][operands[1]]
  kSlice,      // operands[0][operands[1]:operands[2]:operands[3]], absent parts null
  kCall,       // builtin(operands...), a global function
  kMethod,     // operands[0].name(operands[1...])
  kFilter,     // operands[0] | builtin(operands[1...])
  kTest,       // operands[0] is [not] builtin(operands[1...])
  kNegate,     // -operands[0]
  kPlus,       // +operands[0]
  kNot,        // not operands[0]
  kAnd,        // operands[0] and operands[1]
  kOr,         // operands[0] or operands[1]
  kBinary,     // operands[0] binary_op operands[1]
  kCompare,    // operands[0] compare_ops[0] operands[1] compare_ops[1] operands[2] ...
  kConcat,     // operands[0] ~ operands[1]
  kCondition,  // operands[0] if operands[1] else operands[2] (null: undefined)
};

enum class BinaryOp { kAdd, kSubtract, kMultiply, kDivide, kFloorDivide, kModulo, kPower };
enum class CompareOp { kEqual, kNotEqual, kLess, kLessEqual, kGreater, kGreaterEqual, kIn, kNotIn };

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  std::size_t begin = 0;  // source bytes [begin, end) of the expression
  std::size_t end = 0;
  std::vector<std::unique_ptr<Expr>> operands;
  Value literal;                       // kLiteral
  std::string name;                    // kName, kAttribute, kMethod; the builtin's name
  const Builtin* builtin = nullptr;    // kCall, kFilter, kTest
  std::vector<std::string> arg_names;  // per argument operand: its keyword, or "" (positional)
  std::vector<int> arg_slots;          // kCall/kFilter/kTest: each argument's parameter index
  bool negated = false;                // kTest: `is not`
  int depth = 1;                       // 1 + the largest depth of the operands
  BinaryOp binary_op = BinaryOp::kAdd;
  std::vector<CompareOp> compare_ops;
};

enum class StmtKind {
  kText,      // text
  kOutput,    // {{ expr }}
  kIf,        // {% if conditions[0] %} branches[0] {% elif conditions[1] %} branches[1] ...
              // {% else %} else_body {% endif %}
  kFor,       // {% for targets in expr [if filter] %} body {% else %} else_body {% endfor %}
  kSet,       // {% set targets = expr %}
  kSetAttr,   // {% set targets[0].targets[1] = expr %}
  kSetBlock,  // {% set targets[0] %} body {% endset %}
  kBreak,
  kContinue,
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  std::size_t offset = 0;
  std::string text;
  std::unique_ptr<Expr> expr;
  std::unique_ptr<Expr> filter;
  std::vector<std::string> targets;
  std::vector<Stmt> body;
  std::vector<Stmt> else_body;
  std::vector<std::unique_ptr<Expr>> conditions;  // kIf
  std::vector<std::vector<Stmt>> branches;        // kIf
};

template <class E>
void Source::fail(std::size_t offset, const std::string& message) const {
  throw E(where(offset) + ": " + message, ErrorFields{.file = origin});
}

}  // namespace ferry::models::chat
