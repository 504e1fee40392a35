#include "models/chat/render.h"

#include <fmt/format.h>

#include <string_view>

#include "ferry/core/error.h"
#include "ferry/models/chat_template.h"
#include "models/chat/builtins.h"
#include "models/chat/ops.h"

namespace ferry::models::chat {
namespace {

class Renderer {
 public:
  Renderer(const Source& source, std::shared_ptr<const Json> variables)
      : source_(source), variables_(std::move(variables)), budget_(kMaxChatRenderSteps) {}

  std::string run(const std::vector<Stmt>& program) {
    exec(program);
    return std::move(out_);
  }

 private:
  // What a statement asks of the loop around it.
  enum class Flow { kNormal, kBreak, kContinue };

  // A variable set by `set` or a loop. Names point into the syntax tree, which outlives a render.
  struct Binding {
    std::string_view name;
    Value value;
  };

  // Jinja's scopes: each loop iteration has its own, so what the body sets is gone after it
  // (namespaces are how a template carries a value out of a loop).
  class Scope {
   public:
    explicit Scope(Renderer& r) : r_(r), saved_begin_(r.scope_begin_) {
      r_.scope_begin_ = r_.bindings_.size();
    }
    ~Scope() {
      r_.bindings_.resize(r_.scope_begin_);
      r_.scope_begin_ = saved_begin_;
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Renderer& r_;
    std::size_t saved_begin_;
  };

  [[noreturn]] void fail(std::size_t offset, const std::string& message) const {
    source_.fail<InvalidArgument>(offset, message);
  }

  // The source text of `e`, shortened, for messages.
  std::string text_of(const Expr& e) const {
    std::string_view text = std::string_view(source_.text).substr(e.begin, e.end - e.begin);
    if (text.size() > 60) return fmt::format("{}...", text.substr(0, 57));
    return std::string(text);
  }

  [[noreturn]] void undefined(const Expr& e) const {
    fail(e.begin, fmt::format("'{}' is undefined", text_of(e)));
  }

  void emit(std::string_view text) {
    if (out_.size() + text.size() > kMaxChatOutputBytes) {
      throw EvalError(fmt::format("the output passed {} MiB", kMaxChatOutputBytes >> 20));
    }
    out_.append(text);
  }

  void bind(std::string_view name, Value value) {
    for (std::size_t i = bindings_.size(); i > scope_begin_; --i) {
      if (bindings_[i - 1].name == name) {
        bindings_[i - 1].value = std::move(value);
        return;
      }
    }
    bindings_.push_back(Binding{name, std::move(value)});
  }

  // Binds `value` to `targets`, unpacking it when there are several (`for k, v in d.items()`).
  void bind_targets(const std::vector<std::string>& targets, const Value& value) {
    if (targets.size() == 1) return bind(targets[0], value);
    if (!value.is_list() || value.json().size() != targets.size()) {
      throw EvalError(
          fmt::format("cannot unpack a {} into {} variables", value.type_name(), targets.size()));
    }
    for (std::size_t i = 0; i < targets.size(); ++i) bind(targets[i], value.child(value.json()[i]));
  }

  Value lookup(std::string_view name) const {
    for (std::size_t i = bindings_.size(); i > 0; --i) {
      if (bindings_[i - 1].name == name) return bindings_[i - 1].value;
    }
    const auto it = variables_->find(name);
    return it == variables_->end() ? Value() : Value::view(variables_, &*it);
  }

  Flow exec(const std::vector<Stmt>& body) {
    for (const Stmt& s : body) {
      const Flow flow = exec(s);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Flow exec(const Stmt& s) {
    try {
      budget_.charge(1);
      return exec_statement(s);
    } catch (const EvalError& error) {
      fail(s.offset, error.what());
    }
  }

  Flow exec_statement(const Stmt& s) {
    switch (s.kind) {
      case StmtKind::kText: emit(s.text); return Flow::kNormal;
      case StmtKind::kOutput: {
        const Value v = eval(*s.expr);
        if (v.is_string()) {
          emit(v.str());
        } else {
          emit(to_str(v));
        }
        return Flow::kNormal;
      }
      case StmtKind::kIf:
        for (std::size_t i = 0; i < s.conditions.size(); ++i) {
          if (eval(*s.conditions[i]).truthy()) return exec(s.branches[i]);
        }
        return exec(s.else_body);
      case StmtKind::kFor: return exec_for(s);
      case StmtKind::kSet: bind_targets(s.targets, eval(*s.expr)); return Flow::kNormal;
      case StmtKind::kSetAttr: {
        const Value target = lookup(s.targets[0]);
        if (!target.is_object() || !target.object().is_namespace) {
          throw EvalError(
              fmt::format("cannot set '{}.{}': '{}' is not a namespace (its type is {})",
                          s.targets[0], s.targets[1], s.targets[0], target.type_name()));
        }
        Value value = eval(*s.expr);
        check_namespace_value(value);
        target.object().attributes[s.targets[1]] = std::move(value);
        return Flow::kNormal;
      }
      case StmtKind::kSetBlock: {
        std::string outer = std::exchange(out_, std::string());
        const Flow flow = exec(s.body);
        std::string captured = std::exchange(out_, std::move(outer));
        bind(s.targets[0], Value(Json(std::move(captured))));
        return flow;
      }
      case StmtKind::kBreak: return Flow::kBreak;
      case StmtKind::kContinue: return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  Flow exec_for(const Stmt& s) {
    std::vector<Value> items = iterate(eval(*s.expr), budget_);
    if (s.filter) {
      std::vector<Value> kept;
      for (Value& v : items) {
        Scope scope(*this);
        bind_targets(s.targets, v);
        if (eval(*s.filter).truthy()) kept.push_back(std::move(v));
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body);
    auto loop = std::make_shared<Object>();
    loop->loop_items = std::move(items);
    const Value loop_value = Value::object(loop);
    for (std::size_t i = 0; i < loop->loop_items.size(); ++i) {
      loop->loop_index = i;
      Scope scope(*this);
      bind_targets(s.targets, loop->loop_items[i]);
      bind("loop", loop_value);
      if (exec(s.body) == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Value eval(const Expr& e) {
    try {
      budget_.charge(1);
      return eval_expression(e);
    } catch (const EvalError& error) {
      fail(e.begin, error.what());
    }
  }

  // An operand that must be defined (arithmetic, a method's receiver).
  Value eval_defined(const Expr& e) {
    Value v = eval(e);
    if (v.is_undefined()) undefined(e);
    return v;
  }

  // The arguments of a filter, test or function call, operands[first...] bound to parameters.
  Args eval_args(const Expr& e, std::size_t first) {
    Args args{.params = std::vector<std::optional<Value>>(e.builtin->params.size())};
    for (std::size_t i = first; i < e.operands.size(); ++i) {
      Value v = eval(*e.operands[i]);
      const int slot = e.arg_slots[i - first];
      if (slot < 0) {
        args.keywords.emplace_back(e.arg_names[i - first], std::move(v));
      } else {
        args.params[static_cast<std::size_t>(slot)] = std::move(v);
      }
    }
    return args;
  }

  Value eval_expression(const Expr& e) {
    const auto& ops = e.operands;
    switch (e.kind) {
      case ExprKind::kLiteral: return e.literal;
      case ExprKind::kName: return lookup(e.name);
      case ExprKind::kList: {
        std::vector<Value> items;
        for (const auto& op : ops) items.push_back(eval(*op));
        return make_list(items, budget_);
      }
      case ExprKind::kDict: return eval_dict(e);
      case ExprKind::kAttribute: return attribute(eval(*ops[0]), e.name);
      case ExprKind::kItem: {
        const Value container = eval(*ops[0]);
        budget_.charge(scan_cost(container));
        return item(container, eval(*ops[1]));
      }
      case ExprKind::kSlice: {
        const Value container = eval(*ops[0]);
        auto part = [&](std::size_t i) { return ops[i] ? eval(*ops[i]) : Value(); };
        const Value start = part(1);
        const Value stop = part(2);
        return slice(container, start, stop, part(3), budget_);
      }
      case ExprKind::kCall: return e.builtin->fn(Value(), eval_args(e, 0), budget_);
      case ExprKind::kMethod: {
        const Value receiver = eval_defined(*ops[0]);
        budget_.charge(scan_cost(receiver));
        std::vector<Value> args;
        for (std::size_t i = 1; i < ops.size(); ++i) args.push_back(eval(*ops[i]));
        return call_method(receiver, e.name, args, e.arg_names, budget_);
      }
      case ExprKind::kFilter: {
        const Value input = eval(*ops[0]);
        budget_.charge(scan_cost(input));
        return e.builtin->fn(input, eval_args(e, 1), budget_);
      }
      case ExprKind::kTest: {
        const Value input = eval(*ops[0]);
        budget_.charge(scan_cost(input));
        const bool passes = e.builtin->fn(input, eval_args(e, 1), budget_).truthy();
        return Value(Json(passes != e.negated));
      }
      case ExprKind::kNegate: return negate(eval_defined(*ops[0]));
      case ExprKind::kPlus: {
        Value v = eval_defined(*ops[0]);
        if (!v.is_number())
          throw EvalError(fmt::format("bad operand type for unary +: '{}'", v.type_name()));
        return v;
      }
      case ExprKind::kNot: return Value(Json(!eval(*ops[0]).truthy()));
      case ExprKind::kAnd: {
        Value a = eval(*ops[0]);
        return a.truthy() ? eval(*ops[1]) : a;
      }
      case ExprKind::kOr: {
        Value a = eval(*ops[0]);
        return a.truthy() ? a : eval(*ops[1]);
      }
      case ExprKind::kBinary: {
        const Value a = eval_defined(*ops[0]);
        return binary(e.binary_op, a, eval_defined(*ops[1]), budget_);
      }
      case ExprKind::kCompare: {
        Value left = eval(*ops[0]);
        for (std::size_t i = 0; i < e.compare_ops.size(); ++i) {
          Value right = eval(*ops[i + 1]);
          budget_.charge(scan_cost(left) + scan_cost(right));
          if (!compare(e.compare_ops[i], left, right)) return Value(Json(false));
          left = std::move(right);
        }
        return Value(Json(true));
      }
      case ExprKind::kConcat: {
        std::string s;
        for (const auto& op : ops) {
          append_str(s, eval(*op));
          check_string_size(s.size());
        }
        budget_.charge(s.size() / 64);
        return Value(Json(std::move(s)));
      }
      case ExprKind::kCondition:
        if (eval(*ops[1]).truthy()) return eval(*ops[0]);
        return ops[2] ? eval(*ops[2]) : Value();
    }
    return Value();
  }

  Value eval_dict(const Expr& e) {
    Json out = Json::object();
    for (std::size_t i = 0; i + 1 < e.operands.size(); i += 2) {
      const Value key = eval(*e.operands[i]);
      if (!key.is_string()) {
        throw EvalError(fmt::format("dict keys must be strings here, not '{}'", key.type_name()));
      }
      std::optional<Json> value = eval(*e.operands[i + 1]).to_json();
      if (value && deeper_than(*value, kMaxValueDepth - 1)) {
        throw EvalError(fmt::format("values nested deeper than {} levels", kMaxValueDepth));
      }
      budget_.charge(value ? copy_cost(*value) : 1);
      out[key.str()] = value ? std::move(*value) : Json();
    }
    return Value(std::move(out));
  }

  const Source& source_;
  std::shared_ptr<const Json> variables_;
  Budget budget_;
  std::string out_;
  std::vector<Binding> bindings_;
  std::size_t scope_begin_ = 0;  // bindings_[scope_begin_...] are the innermost scope's
};

}  // namespace

std::string render_template(const Source& source, const std::vector<Stmt>& program,
                            const std::shared_ptr<const Json>& variables) {
  return Renderer(source, variables).run(program);
}

}  // namespace ferry::models::chat
