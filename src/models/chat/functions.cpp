// Tests (`value is name`), global functions (`name(args)`) and the methods of strings and
// dicts (`value.name(args)`).
#include <fmt/format.h>

#include <ctime>

#include "models/chat/builtins.h"
#include "models/chat/text.h"

namespace ferry::models::chat {
namespace {

// The sandbox transformers renders in allows no larger range().
constexpr std::int64_t kMaxRange = 100'000;

const Value kNone{Json()};

Value boolean(bool b) { return Value(Json(b)); }

// --- Tests.

Value defined_test(const Value& in, const Args&, Budget&) { return boolean(!in.is_undefined()); }
Value undefined_test(const Value& in, const Args&, Budget&) { return boolean(in.is_undefined()); }
Value none_test(const Value& in, const Args&, Budget&) { return boolean(in.is_none()); }
Value boolean_test(const Value& in, const Args&, Budget&) {
  return boolean(in.is_json() && in.json().is_boolean());
}
Value true_test(const Value& in, const Args&, Budget&) {
  return boolean(in.is_json() && in.json().is_boolean() && in.json().get<bool>());
}
Value false_test(const Value& in, const Args&, Budget&) {
  return boolean(in.is_json() && in.json().is_boolean() && !in.json().get<bool>());
}
Value integer_test(const Value& in, const Args&, Budget&) {
  return boolean(in.is_json() && in.json().is_number_integer());
}
Value float_test(const Value& in, const Args&, Budget&) {
  return boolean(in.is_json() && in.json().is_number_float());
}
Value number_test(const Value& in, const Args&, Budget&) { return boolean(in.is_number()); }
Value string_test(const Value& in, const Args&, Budget&) { return boolean(in.is_string()); }
Value mapping_test(const Value& in, const Args&, Budget&) { return boolean(in.is_dict()); }
// Undefined counts as iterable, as in Jinja (it iterates as empty).
Value iterable_test(const Value& in, const Args&, Budget&) {
  return boolean(in.is_undefined() || in.is_string() || in.is_list() || in.is_dict());
}

template <CompareOp op>
Value compare_test(const Value& in, const Args& args, Budget&) {
  return boolean(compare(op, in, args.get(0, kNone)));
}

std::int64_t int_operand(const Value& v, std::string_view test) {
  const auto i = as_int(v, /*allow_integral_float=*/true);
  if (!i) throw EvalError(fmt::format("test '{}' needs an int, not '{}'", test, v.type_name()));
  return *i;
}

Value odd_test(const Value& in, const Args&, Budget&) {
  return boolean(int_operand(in, "odd") % 2 != 0);
}
Value even_test(const Value& in, const Args&, Budget&) {
  return boolean(int_operand(in, "even") % 2 == 0);
}
Value divisibleby_test(const Value& in, const Args& args, Budget&) {
  const std::int64_t d = int_operand(args.get(0, kNone), "divisibleby");
  if (d == 0) throw EvalError("divisibleby 0");
  return boolean(d == -1 || int_operand(in, "divisibleby") % d == 0);
}

// Python's str.islower()/isupper(): some cased character, and all of them in that case.
Value case_test(const Value& in, bool want_lower) {
  if (!in.is_string()) return boolean(false);
  bool cased = false;
  for (const char c : in.str()) {
    const bool lower = c >= 'a' && c <= 'z';
    const bool upper = c >= 'A' && c <= 'Z';
    if ((want_lower && upper) || (!want_lower && lower)) return boolean(false);
    cased = cased || lower || upper;
  }
  return boolean(cased);
}
Value lower_test(const Value& in, const Args&, Budget&) { return case_test(in, true); }
Value upper_test(const Value& in, const Args&, Budget&) { return case_test(in, false); }

// --- Global functions.

Value range_function(const Value&, const Args& args, Budget& budget) {
  auto bound = [&](std::size_t i, std::int64_t fallback) {
    if (!args.given(i)) return fallback;
    const auto v = as_int(*args.at(i));
    if (!v) throw EvalError(fmt::format("range() needs ints, not '{}'", args.at(i)->type_name()));
    return *v;
  };
  std::int64_t start = bound(0, 0);
  std::int64_t stop = bound(1, 0);
  if (!args.given(1)) std::swap(start, stop);  // range(stop)
  const std::int64_t step = bound(2, 1);
  if (step == 0) throw EvalError("range() step cannot be zero");
  // The count without overflow: stop - start may not fit 64 bits.
  const long double span = static_cast<long double>(stop) - static_cast<long double>(start);
  const long double count = span / static_cast<long double>(step);
  if (count > static_cast<long double>(kMaxRange)) {
    throw EvalError(fmt::format("range() of more than {} numbers", kMaxRange));
  }
  Json out = Json::array();
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop;) {
    out.push_back(i);
    if (__builtin_add_overflow(i, step, &i)) break;
  }
  budget.charge(out.size());
  return Value(std::move(out));
}

Value namespace_function(const Value&, const Args& args, Budget&) {
  auto object = std::make_shared<Object>();
  object->is_namespace = true;
  for (const auto& [name, value] : args.keywords) {
    check_namespace_value(value);
    object->attributes[name] = value;
  }
  return Value::object(std::move(object));
}

Value dict_function(const Value&, const Args& args, Budget& budget) {
  Json out = Json::object();
  for (const auto& [name, value] : args.keywords) {
    std::optional<Json> json = value.to_json();
    if (json && deeper_than(*json, kMaxValueDepth - 1)) {
      throw EvalError(fmt::format("values nested deeper than {} levels", kMaxValueDepth));
    }
    budget.charge(json ? copy_cost(*json) : 1);
    out[name] = json ? std::move(*json) : Json();
  }
  return Value(std::move(out));
}

Value raise_exception_function(const Value&, const Args& args, Budget&) {
  throw EvalError(to_str(args.get(0, kNone)));
}

// transformers' strftime_now: the local time now, formatted by strftime.
Value strftime_now_function(const Value&, const Args& args, Budget&) {
  const Value& format = args.get(0, kNone);
  if (!format.is_string()) throw EvalError("strftime_now() needs a format string");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[512];
  const std::size_t n =
      format.str().size() < 128 ? std::strftime(buf, sizeof buf, format.str().c_str(), &local) : 0;
  return Value(Json(std::string(buf, n)));
}

// --- Methods of strings.

const std::string* optional_string_arg(const Args& args, std::size_t i, std::string_view what) {
  const Value& v = args.get(i, kNone);
  if (v.is_none()) return nullptr;
  if (!v.is_string())
    throw EvalError(fmt::format("{} must be a string, not '{}'", what, v.type_name()));
  return &v.str();
}

template <bool kLeft, bool kRight>
Value strip_method(const Value& in, const Args& args, Budget&) {
  return Value(Json(
      std::string(strip(in.str(), optional_string_arg(args, 0, "strip's chars"), kLeft, kRight))));
}

template <bool kStarts>
Value affix_method(const Value& in, const Args& args, Budget&) {
  const std::string& s = in.str();
  const Value& affix = args.get(0, kNone);
  auto matches = [&](const Json& a) {
    if (!a.is_string()) throw EvalError("startswith/endswith need a string or a list of strings");
    const auto& text = a.get_ref<const std::string&>();
    return kStarts ? s.starts_with(text) : s.ends_with(text);
  };
  if (affix.is_list()) {
    for (const Json& a : affix.json()) {
      if (matches(a)) return boolean(true);
    }
    return boolean(false);
  }
  return boolean(matches(affix.is_json() ? affix.json() : Json()));
}

Value split_method(const Value& in, const Args& args, Budget& budget) {
  const std::string* sep = optional_string_arg(args, 0, "split's separator");
  if (sep != nullptr && sep->empty()) throw EvalError("split: empty separator");
  const auto max_split = as_int(args.get(1, Value(Json(-1))));
  if (!max_split) throw EvalError("split's maxsplit must be an int");
  Json out = Json::array();
  for (std::string& part : split(in.str(), sep, *max_split)) out.push_back(std::move(part));
  budget.charge(out.size());
  return Value(std::move(out));
}

Value upper_method(const Value& in, const Args&, Budget&) {
  return Value(Json(to_upper(in.str())));
}
Value lower_method(const Value& in, const Args&, Budget&) {
  return Value(Json(to_lower(in.str())));
}
Value title_method(const Value& in, const Args&, Budget&) {
  return Value(Json(python_title(in.str())));
}
Value capitalize_method(const Value& in, const Args&, Budget&) {
  return Value(Json(capitalize(in.str())));
}

Value replace_method(const Value& in, const Args& args, Budget& budget) {
  const std::string* from = optional_string_arg(args, 0, "replace's old");
  const std::string* to = optional_string_arg(args, 1, "replace's new");
  const auto count = as_int(args.get(2, Value(Json(-1))));
  if (from == nullptr || to == nullptr || !count)
    throw EvalError("replace(old, new[, count]) needs strings");
  budget.charge(1 + in.str().size() / 64);
  return make_string(replace(in.str(), *from, *to, *count));
}

Value join_method(const Value& in, const Args& args, Budget& budget) {
  std::string out;
  bool first = true;
  for (const Value& item : iterate(args.get(0, kNone), budget)) {
    if (!first) out.append(in.str());
    first = false;
    append_str(out, item);
    check_string_size(out.size());
  }
  return Value(Json(std::move(out)));
}

// --- Methods of dicts.

Value get_method(const Value& in, const Args& args, Budget&) {
  const Value v = item(in, args.get(0, kNone));
  return v.is_undefined() ? args.get(1, kNone) : v;
}

Value items_method(const Value& in, const Args& args, Budget& budget) {
  return find_builtin(BuiltinKind::kFilter, "items")->fn(in, args, budget);
}

Value keys_method(const Value& in, const Args&, Budget& budget) {
  return make_list(iterate(in, budget), budget);
}

Value values_method(const Value& in, const Args&, Budget& budget) {
  std::vector<Value> values;
  for (const auto& [key, value] : in.json().items()) values.push_back(in.child(value));
  return make_list(values, budget);
}

}  // namespace

const std::vector<Builtin>& test_function_and_method_builtins() {
  using K = BuiltinKind;
  static const std::vector<Builtin> builtins = {
      {"boolean", K::kTest, boolean_test, {}},
      {"defined", K::kTest, defined_test, {}},
      {"divisibleby", K::kTest, divisibleby_test, {"num"}, 1},
      {"eq", K::kTest, compare_test<CompareOp::kEqual>, {"other"}, 1},
      {"equalto", K::kTest, compare_test<CompareOp::kEqual>, {"other"}, 1},
      {"==", K::kTest, compare_test<CompareOp::kEqual>, {"other"}, 1},
      {"even", K::kTest, even_test, {}},
      {"false", K::kTest, false_test, {}},
      {"float", K::kTest, float_test, {}},
      {"ge", K::kTest, compare_test<CompareOp::kGreaterEqual>, {"other"}, 1},
      {">=", K::kTest, compare_test<CompareOp::kGreaterEqual>, {"other"}, 1},
      {"gt", K::kTest, compare_test<CompareOp::kGreater>, {"other"}, 1},
      {"greaterthan", K::kTest, compare_test<CompareOp::kGreater>, {"other"}, 1},
      {">", K::kTest, compare_test<CompareOp::kGreater>, {"other"}, 1},
      {"in", K::kTest, compare_test<CompareOp::kIn>, {"seq"}, 1},
      {"integer", K::kTest, integer_test, {}},
      {"iterable", K::kTest, iterable_test, {}},
      {"le", K::kTest, compare_test<CompareOp::kLessEqual>, {"other"}, 1},
      {"<=", K::kTest, compare_test<CompareOp::kLessEqual>, {"other"}, 1},
      {"lower", K::kTest, lower_test, {}},
      {"lt", K::kTest, compare_test<CompareOp::kLess>, {"other"}, 1},
      {"lessthan", K::kTest, compare_test<CompareOp::kLess>, {"other"}, 1},
      {"<", K::kTest, compare_test<CompareOp::kLess>, {"other"}, 1},
      {"mapping", K::kTest, mapping_test, {}},
      {"ne", K::kTest, compare_test<CompareOp::kNotEqual>, {"other"}, 1},
      {"!=", K::kTest, compare_test<CompareOp::kNotEqual>, {"other"}, 1},
      {"none", K::kTest, none_test, {}},
      {"number", K::kTest, number_test, {}},
      {"odd", K::kTest, odd_test, {}},
      {"sequence", K::kTest, iterable_test, {}},
      {"string", K::kTest, string_test, {}},
      {"true", K::kTest, true_test, {}},
      {"undefined", K::kTest, undefined_test, {}},
      {"upper", K::kTest, upper_test, {}},

      {"dict", K::kFunction, dict_function, {}, 0, /*any_keywords=*/true},
      {"namespace", K::kFunction, namespace_function, {}, 0, /*any_keywords=*/true},
      {"raise_exception", K::kFunction, raise_exception_function, {"message"}, 1},
      {"range", K::kFunction, range_function, {"start", "stop", "step"}, 1},
      {"strftime_now", K::kFunction, strftime_now_function, {"format"}, 1},

      {"capitalize", K::kStringMethod, capitalize_method, {}},
      {"endswith", K::kStringMethod, affix_method<false>, {"suffix"}, 1},
      {"join", K::kStringMethod, join_method, {"iterable"}, 1},
      {"lower", K::kStringMethod, lower_method, {}},
      {"lstrip", K::kStringMethod, strip_method<true, false>, {"chars"}},
      {"replace", K::kStringMethod, replace_method, {"old", "new", "count"}, 2},
      {"rstrip", K::kStringMethod, strip_method<false, true>, {"chars"}},
      {"split", K::kStringMethod, split_method, {"sep", "maxsplit"}},
      {"startswith", K::kStringMethod, affix_method<true>, {"prefix"}, 1},
      {"strip", K::kStringMethod, strip_method<true, true>, {"chars"}},
      {"title", K::kStringMethod, title_method, {}},
      {"upper", K::kStringMethod, upper_method, {}},

      {"get", K::kDictMethod, get_method, {"key", "default"}, 1},
      {"items", K::kDictMethod, items_method, {}},
      {"keys", K::kDictMethod, keys_method, {}},
      {"values", K::kDictMethod, values_method, {}},
  };
  return builtins;
}

}  // namespace ferry::models::chat
