#include "models/chat/builtins.h"

#include <fmt/format.h>

#include <algorithm>

namespace ferry::models::chat {

const Builtin* find_builtin(BuiltinKind kind, std::string_view name) {
  const auto& table =
      kind == BuiltinKind::kFilter ? filter_builtins() : test_function_and_method_builtins();
  const auto it = std::find_if(table.begin(), table.end(),
                               [&](const Builtin& b) { return b.kind == kind && b.name == name; });
  return it == table.end() ? nullptr : &*it;
}

std::string_view kind_name(BuiltinKind kind) {
  switch (kind) {
    case BuiltinKind::kFilter: return "filter";
    case BuiltinKind::kTest: return "test";
    case BuiltinKind::kFunction: return "function";
    default: return "method";
  }
}

std::vector<int> bind_arguments(const Builtin& builtin, const std::vector<std::string>& arg_names) {
  const std::string what = fmt::format("{} '{}'", kind_name(builtin.kind), builtin.name);
  std::vector<int> slots;
  std::vector<bool> filled(builtin.params.size(), false);
  std::vector<std::string_view> extra_keywords;
  std::size_t next_positional = 0;
  for (const std::string& name : arg_names) {
    if (name.empty()) {
      if (next_positional >= builtin.params.size()) {
        throw EvalError(
            fmt::format("{} takes at most {} positional argument(s)", what, builtin.params.size()));
      }
      slots.push_back(static_cast<int>(next_positional));
      filled[next_positional++] = true;
      continue;
    }
    const auto it = std::find(builtin.params.begin(), builtin.params.end(), name);
    if (it == builtin.params.end()) {
      if (!builtin.any_keywords)
        throw EvalError(fmt::format("{} has no parameter '{}'", what, name));
      if (std::find(extra_keywords.begin(), extra_keywords.end(), name) != extra_keywords.end()) {
        throw EvalError(fmt::format("{} got '{}' twice", what, name));
      }
      extra_keywords.push_back(name);
      slots.push_back(-1);
      continue;
    }
    const auto index = static_cast<std::size_t>(it - builtin.params.begin());
    if (filled[index]) throw EvalError(fmt::format("{} got '{}' twice", what, name));
    filled[index] = true;
    slots.push_back(static_cast<int>(index));
  }
  for (std::size_t i = 0; i < builtin.required; ++i) {
    if (!filled[i]) throw EvalError(fmt::format("{} needs argument '{}'", what, builtin.params[i]));
  }
  return slots;
}

bool is_method_name(std::string_view name) {
  return find_builtin(BuiltinKind::kStringMethod, name) != nullptr ||
         find_builtin(BuiltinKind::kDictMethod, name) != nullptr;
}

Value call_method(const Value& receiver, std::string_view name, const std::vector<Value>& args,
                  const std::vector<std::string>& arg_names, Budget& budget) {
  const Builtin* method = nullptr;
  if (receiver.is_string()) method = find_builtin(BuiltinKind::kStringMethod, name);
  if (receiver.is_dict()) method = find_builtin(BuiltinKind::kDictMethod, name);
  if (method == nullptr) {
    throw EvalError(fmt::format("'{}' has no method '{}'", receiver.type_name(), name));
  }
  const std::vector<int> slots = bind_arguments(*method, arg_names);
  Args bound{.params = std::vector<std::optional<Value>>(method->params.size())};
  for (std::size_t i = 0; i < args.size(); ++i)
    bound.params[static_cast<std::size_t>(slots[i])] = args[i];
  return method->fn(receiver, bound, budget);
}

bool apply_test(std::string_view name, const Value& value, const std::optional<Value>& argument,
                Budget& budget) {
  const Builtin* test = find_builtin(BuiltinKind::kTest, name);
  if (test == nullptr) throw EvalError(fmt::format("unknown test '{}'", name));
  const std::vector<std::string> arg_names(argument ? 1 : 0);
  bind_arguments(*test, arg_names);
  Args bound{.params = std::vector<std::optional<Value>>(test->params.size())};
  if (argument) bound.params[0] = *argument;
  return test->fn(value, bound, budget).truthy();
}

}  // namespace ferry::models::chat
