// The filters (`value | name(args)`), with Jinja's behaviour except where noted in
// docs/chat_templates.md.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>

#include "models/chat/builtins.h"
#include "models/chat/text.h"

namespace ferry::models::chat {
namespace {

const Value kUndefined;
const Value kNone{Json()};
const Value kFalse{Json(false)};
const Value kEmptyString{Json("")};

Value string_value(std::string s) { return make_string(std::move(s)); }

// An optional string argument: nullptr when not given or none.
const std::string* optional_string(const Args& args, std::size_t i, std::string_view what) {
  const Value& v = args.get(i, kNone);
  if (v.is_none() || v.is_undefined()) return nullptr;
  if (!v.is_string())
    throw EvalError(fmt::format("{} must be a string, not '{}'", what, v.type_name()));
  return &v.str();
}

const std::string& required_string(const Args& args, std::size_t i, std::string_view what) {
  const std::string* s = optional_string(args, i, what);
  if (s == nullptr) throw EvalError(fmt::format("{} must be a string", what));
  return *s;
}

// Jinja's attribute paths of map/selectattr/join: "a.b", "items.0".
Value attribute_path(const Value& value, std::string_view path) {
  Value v = value;
  while (true) {
    const std::size_t dot = path.find('.');
    const std::string_view part = path.substr(0, dot);
    std::int64_t index = 0;
    const auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), index);
    if (ec == std::errc() && ptr == part.data() + part.size()) {
      v = item(v, Value(Json(index)));
    } else {
      v = item(v, Value(Json(std::string(part))));
    }
    if (dot == std::string_view::npos) return v;
    path.remove_prefix(dot + 1);
  }
}

Value abs_filter(const Value& in, const Args&, Budget&) {
  if (!in.is_number()) throw EvalError(fmt::format("abs of '{}'", in.type_name()));
  const auto i = as_int(in);
  if (i && *i == std::numeric_limits<std::int64_t>::min()) throw EvalError("integer overflow");
  return i ? Value(Json(*i < 0 ? -*i : *i)) : Value(Json(std::fabs(as_double(in))));
}

Value capitalize_filter(const Value& in, const Args&, Budget&) {
  return string_value(capitalize(to_str(in)));
}

Value length_filter(const Value& in, const Args&, Budget&) {
  return Value(Json(static_cast<std::int64_t>(length(in))));
}

Value default_filter(const Value& in, const Args& args, Budget&) {
  const bool use_default = in.is_undefined() || (args.get(1, kFalse).truthy() && !in.truthy());
  return use_default ? args.get(0, kEmptyString) : in;
}

Value first_filter(const Value& in, const Args&, Budget& budget) {
  if (in.is_list()) return in.json().empty() ? Value() : in.child(in.json().front());
  const std::vector<Value> items = iterate(in, budget);
  return items.empty() ? Value() : items.front();
}

Value last_filter(const Value& in, const Args&, Budget& budget) {
  if (in.is_list()) return in.json().empty() ? Value() : in.child(in.json().back());
  const std::vector<Value> items = iterate(in, budget);
  return items.empty() ? Value() : items.back();
}

// The string as Python's float() reads it, or nullopt.
std::optional<double> parse_float(std::string_view s) {
  s = strip(s, nullptr, /*left=*/true, /*right=*/true);
  std::string cleaned;
  for (const char c : s) {
    if (c != '_') cleaned.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  std::string_view body = cleaned;
  const bool negative = body.starts_with('-');
  if (negative || body.starts_with('+')) body.remove_prefix(1);
  double d = 0;
  if (body == "inf" || body == "infinity") {
    d = std::numeric_limits<double>::infinity();
  } else if (body == "nan") {
    d = std::numeric_limits<double>::quiet_NaN();
  } else {
    const auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), d);
    if (body.empty() || ec != std::errc() || ptr != body.data() + body.size()) return std::nullopt;
  }
  return negative ? -d : d;
}

Value float_filter(const Value& in, const Args& args, Budget&) {
  if (in.is_number()) return Value(Json(as_double(in)));
  if (in.is_string()) {
    if (const auto d = parse_float(in.str())) return Value(Json(*d));
  }
  return args.get(0, Value(Json(0.0)));
}

// The string as Python's int(s, base) reads it, or nullopt.
std::optional<std::int64_t> parse_int(std::string_view s, int base) {
  s = strip(s, nullptr, /*left=*/true, /*right=*/true);
  const bool negative = s.starts_with('-');
  if (negative || s.starts_with('+')) s.remove_prefix(1);
  if (s.size() > 2 && s[0] == '0') {
    const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(s[1])));
    if ((base == 16 && p == 'x') || (base == 8 && p == 'o') || (base == 2 && p == 'b')) {
      s.remove_prefix(2);
    }
  }
  std::string digits;
  for (const char c : s) {
    if (c != '_') digits.push_back(c);
  }
  std::int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (digits.empty() || digits[0] == '-' || ec != std::errc() ||
      ptr != digits.data() + digits.size()) {
    return std::nullopt;
  }
  return negative ? -value : value;
}

Value int_filter(const Value& in, const Args& args, Budget&) {
  if (const auto i = as_int(in)) return Value(Json(*i));
  std::optional<double> d;
  if (in.is_number()) d = as_double(in);
  if (in.is_string()) {
    const auto base = as_int(args.get(1, Value(Json(10))));
    if (!base || *base < 2 || *base > 36) throw EvalError("int: base must be in [2, 36]");
    if (const auto i = parse_int(in.str(), static_cast<int>(*base))) return Value(Json(*i));
    d = parse_float(in.str());
  }
  if (d && std::isfinite(*d) && std::fabs(*d) < 9.2e18) {
    return Value(Json(static_cast<std::int64_t>(*d)));
  }
  return args.get(0, Value(Json(0)));
}

Value items_filter(const Value& in, const Args&, Budget& budget) {
  Json out = Json::array();
  if (in.is_undefined()) return Value(std::move(out));
  if (!in.is_dict()) throw EvalError(fmt::format("items of '{}', not a dict", in.type_name()));
  if (deeper_than(in.json(), kMaxValueDepth - 1)) {
    throw EvalError(fmt::format("values nested deeper than {} levels", kMaxValueDepth));
  }
  for (const auto& [key, value] : in.json().items()) {
    budget.charge(1 + copy_cost(value));
    out.push_back(Json::array({key, value}));
  }
  return Value(std::move(out));
}

Value join_filter(const Value& in, const Args& args, Budget& budget) {
  const std::string* separator = optional_string(args, 0, "join's separator");
  const std::string* path = optional_string(args, 1, "join's attribute");
  std::string out;
  bool first = true;
  for (const Value& item : iterate(in, budget)) {
    if (!first && separator != nullptr) out.append(*separator);
    first = false;
    append_str(out, path != nullptr ? attribute_path(item, *path) : item);
    check_string_size(out.size());
  }
  return string_value(std::move(out));
}

Value list_filter(const Value& in, const Args&, Budget& budget) {
  return make_list(iterate(in, budget), budget);
}

Value lower_filter(const Value& in, const Args&, Budget&) {
  return string_value(to_lower(to_str(in)));
}
Value upper_filter(const Value& in, const Args&, Budget&) {
  return string_value(to_upper(to_str(in)));
}
Value title_filter(const Value& in, const Args&, Budget&) {
  return string_value(jinja_title(to_str(in)));
}
Value safe_filter(const Value& in, const Args&, Budget&) { return in; }

Value string_filter(const Value& in, const Args&, Budget&) {
  return in.is_string() ? in : string_value(to_str(in));
}

Value trim_filter(const Value& in, const Args& args, Budget&) {
  const std::string s = to_str(in);
  return string_value(std::string(
      strip(s, optional_string(args, 0, "trim's chars"), /*left=*/true, /*right=*/true)));
}

Value replace_filter(const Value& in, const Args& args, Budget& budget) {
  const std::string s = to_str(in);
  const std::string from = to_str(args.get(0, kEmptyString));
  const std::string to = to_str(args.get(1, kEmptyString));
  const Value& count = args.get(2, kNone);
  if (!count.is_none() && !is_int(count)) throw EvalError("replace's count must be an int");
  budget.charge(1 + s.size() / 64);
  return string_value(replace(s, from, to, count.is_none() ? -1 : *as_int(count)));
}

Value reverse_filter(const Value& in, const Args&, Budget& budget) {
  if (in.is_string()) {
    const std::vector<std::size_t> at = code_point_offsets(in.str());
    std::string out;
    for (std::size_t k = at.size() - 1; k > 0; --k)
      out.append(in.str(), at[k - 1], at[k] - at[k - 1]);
    return string_value(std::move(out));
  }
  std::vector<Value> items = iterate(in, budget);
  std::reverse(items.begin(), items.end());
  return make_list(items, budget);
}

Value map_filter(const Value& in, const Args& args, Budget& budget) {
  const std::string* filter_name = optional_string(args, 0, "map's filter");
  const std::string* path = optional_string(args, 1, "map's attribute");
  if ((filter_name == nullptr) == (path == nullptr)) {
    throw EvalError("map needs either a filter name or attribute=");
  }
  const Builtin* filter = nullptr;
  if (filter_name != nullptr) {
    filter = find_builtin(BuiltinKind::kFilter, *filter_name);
    if (filter == nullptr) throw EvalError(fmt::format("map: unknown filter '{}'", *filter_name));
    if (filter->required > 0) {
      throw EvalError(fmt::format("map: filter '{}' needs arguments", *filter_name));
    }
  }
  std::vector<Value> out;
  for (const Value& item : iterate(in, budget)) {
    if (filter != nullptr) {
      const Args none_given{.params = std::vector<std::optional<Value>>(filter->params.size())};
      out.push_back(filter->fn(item, none_given, budget));
    } else {
      Value v = attribute_path(item, *path);
      out.push_back(v.is_undefined() && args.given(2) ? *args.at(2) : v);
    }
  }
  return make_list(out, budget);
}

// select/reject (attribute == nullptr) and selectattr/rejectattr.
Value select_items(const Value& in, const std::string* path, const Value& test,
                   const std::optional<Value>& argument, bool keep, Budget& budget) {
  if (!test.is_undefined() && !test.is_none() && !test.is_string()) {
    throw EvalError("the test to select with must be named by a string");
  }
  std::vector<Value> out;
  for (const Value& item : iterate(in, budget)) {
    const Value subject = path != nullptr ? attribute_path(item, *path) : item;
    const bool passes =
        test.is_string() ? apply_test(test.str(), subject, argument, budget) : subject.truthy();
    if (passes == keep) out.push_back(item);
  }
  return make_list(out, budget);
}

Value select_filter(const Value& in, const Args& args, Budget& budget) {
  return select_items(in, nullptr, args.get(0, kUndefined), args.at(1), true, budget);
}
Value reject_filter(const Value& in, const Args& args, Budget& budget) {
  return select_items(in, nullptr, args.get(0, kUndefined), args.at(1), false, budget);
}
Value selectattr_filter(const Value& in, const Args& args, Budget& budget) {
  return select_items(in, &required_string(args, 0, "selectattr's attribute"),
                      args.get(1, kUndefined), args.at(2), true, budget);
}
Value rejectattr_filter(const Value& in, const Args& args, Budget& budget) {
  return select_items(in, &required_string(args, 0, "rejectattr's attribute"),
                      args.get(1, kUndefined), args.at(2), false, budget);
}

// transformers' tojson: json.dumps(value, ensure_ascii, indent, separators, sort_keys).
Value tojson_filter(const Value& in, const Args& args, Budget& budget) {
  const std::optional<Json> json = in.to_json();
  if (!json) throw EvalError("tojson of an undefined value");
  JsonStyle style;
  style.ensure_ascii = args.get(0, kFalse).truthy();
  const Value& indent = args.get(1, kNone);
  if (is_int(indent)) {
    style.indent = std::string(
        static_cast<std::size_t>(std::clamp<std::int64_t>(*as_int(indent), 0, 64)), ' ');
  } else if (indent.is_string()) {
    style.indent = indent.str();
  } else if (!indent.is_none()) {
    throw EvalError("tojson's indent must be an int, a string or none");
  }
  // With an indent Python's default item separator has no space. (Built, not assigned from a
  // literal, which trips a false -Wrestrict in GCC 12.)
  if (style.indent) style.item_separator = std::string(1, ',');
  const Value& separators = args.get(2, kNone);
  if (!separators.is_none()) {
    const Json& s = separators.is_list() ? separators.json() : Json();
    if (!s.is_array() || s.size() != 2 || !s[0].is_string() || !s[1].is_string()) {
      throw EvalError("tojson's separators must be a list of two strings");
    }
    style.item_separator = s[0].get<std::string>();
    style.key_separator = s[1].get<std::string>();
  }
  style.sort_keys = args.get(3, kFalse).truthy();
  budget.charge(1);
  std::string out = dump_json(*json, style);
  budget.charge(out.size() / 64);
  return string_value(std::move(out));
}

}  // namespace

const std::vector<Builtin>& filter_builtins() {
  static const std::vector<Builtin> filters = {
      {"abs", BuiltinKind::kFilter, abs_filter, {}},
      {"capitalize", BuiltinKind::kFilter, capitalize_filter, {}},
      {"count", BuiltinKind::kFilter, length_filter, {}},
      {"d", BuiltinKind::kFilter, default_filter, {"default_value", "boolean"}},
      {"default", BuiltinKind::kFilter, default_filter, {"default_value", "boolean"}},
      {"first", BuiltinKind::kFilter, first_filter, {}},
      {"float", BuiltinKind::kFilter, float_filter, {"default"}},
      {"int", BuiltinKind::kFilter, int_filter, {"default", "base"}},
      {"items", BuiltinKind::kFilter, items_filter, {}},
      {"join", BuiltinKind::kFilter, join_filter, {"d", "attribute"}},
      {"last", BuiltinKind::kFilter, last_filter, {}},
      {"length", BuiltinKind::kFilter, length_filter, {}},
      {"list", BuiltinKind::kFilter, list_filter, {}},
      {"lower", BuiltinKind::kFilter, lower_filter, {}},
      {"map", BuiltinKind::kFilter, map_filter, {"filter", "attribute", "default"}},
      {"reject", BuiltinKind::kFilter, reject_filter, {"test", "argument"}},
      {"rejectattr", BuiltinKind::kFilter, rejectattr_filter, {"attribute", "test", "argument"}, 1},
      {"replace", BuiltinKind::kFilter, replace_filter, {"old", "new", "count"}, 2},
      {"reverse", BuiltinKind::kFilter, reverse_filter, {}},
      {"safe", BuiltinKind::kFilter, safe_filter, {}},
      {"select", BuiltinKind::kFilter, select_filter, {"test", "argument"}},
      {"selectattr", BuiltinKind::kFilter, selectattr_filter, {"attribute", "test", "argument"}, 1},
      {"string", BuiltinKind::kFilter, string_filter, {}},
      {"title", BuiltinKind::kFilter, title_filter, {}},
      {"tojson",
       BuiltinKind::kFilter,
       tojson_filter,
       {"ensure_ascii", "indent", "separators", "sort_keys"}},
      {"trim", BuiltinKind::kFilter, trim_filter, {"chars"}},
      {"upper", BuiltinKind::kFilter, upper_filter, {}},
  };
  return filters;
}

}  // namespace ferry::models::chat
