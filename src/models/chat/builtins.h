#pragma once
// The filters, tests, global functions and methods a chat template may call. Filters, tests and
// functions are looked up and their arguments bound to parameters when the template is parsed,
// so an unknown name or a wrong argument is a parse error; methods depend on the receiver's
// type and are bound when called.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "models/chat/ops.h"
#include "models/chat/value.h"

namespace ferry::models::chat {

enum class BuiltinKind { kFilter, kTest, kFunction, kStringMethod, kDictMethod };

// A call's arguments by parameter index (nullopt: not given), and the keyword arguments of a
// builtin that takes any (namespace(), dict()).
struct Args {
  std::vector<std::optional<Value>> params;
  std::vector<std::pair<std::string, Value>> keywords;

  // Parameter `i`, or `fallback` when not given.
  const Value& get(std::size_t i, const Value& fallback) const {
    return i < params.size() && params[i] ? *params[i] : fallback;
  }
  bool given(std::size_t i) const { return i < params.size() && params[i].has_value(); }
  std::optional<Value> at(std::size_t i) const {
    return i < params.size() ? params[i] : std::nullopt;
  }
};

// Filters get the filtered value as `input`, tests the tested one (and return a bool value),
// methods their receiver, functions an undefined input.
using BuiltinFn = Value (*)(const Value& input, const Args& args, Budget& budget);

struct Builtin {
  std::string_view name;
  BuiltinKind kind;
  BuiltinFn fn;
  std::vector<std::string_view> params;  // in positional order
  std::size_t required = 0;              // the first `required` params must be given
  bool any_keywords = false;             // further keyword arguments go to Args::keywords
};

// The builtin of `kind` called `name`; nullptr when there is none.
const Builtin* find_builtin(BuiltinKind kind, std::string_view name);
// "filter", "test", "function", "method".
std::string_view kind_name(BuiltinKind kind);

// The parameter index of each argument (-1: a keyword for Args::keywords), given each
// argument's keyword or "" for a positional one. Throws EvalError naming the problem (too many
// arguments, an unknown or repeated keyword, a missing required one).
std::vector<int> bind_arguments(const Builtin& builtin, const std::vector<std::string>& arg_names);

// Whether some type has a method `name` (the parser refuses any other).
bool is_method_name(std::string_view name);
// receiver.name(args...); EvalError when the receiver's type has no such method.
Value call_method(const Value& receiver, std::string_view name, const std::vector<Value>& args,
                  const std::vector<std::string>& arg_names, Budget& budget);

// Applies the test `name` (with one optional argument) as select/selectattr do; EvalError for
// an unknown test.
bool apply_test(std::string_view name, const Value& value, const std::optional<Value>& argument,
                Budget& budget);

// The tables: filters in filters.cpp, the rest in functions.cpp.
const std::vector<Builtin>& filter_builtins();
const std::vector<Builtin>& test_function_and_method_builtins();

}  // namespace ferry::models::chat
