#include "models/chat/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "ferry/models/chat_template.h"
#include "models/chat/text.h"

namespace ferry::models::chat {
namespace {

[[noreturn]] void unsupported_operands(std::string_view op, const Value& a, const Value& b) {
  throw EvalError(fmt::format("unsupported operand types for {}: '{}' and '{}'", op, a.type_name(),
                              b.type_name()));
}

Value int_value(std::int64_t i) { return Value(Json(i)); }

// Jinja's loop variables.
Value loop_attribute(const Object& loop, std::string_view name) {
  const auto n = static_cast<std::int64_t>(loop.loop_items.size());
  const auto i = static_cast<std::int64_t>(loop.loop_index);
  if (name == "index") return int_value(i + 1);
  if (name == "index0") return int_value(i);
  if (name == "revindex") return int_value(n - i);
  if (name == "revindex0") return int_value(n - i - 1);
  if (name == "first") return Value(Json(i == 0));
  if (name == "last") return Value(Json(i == n - 1));
  if (name == "length") return int_value(n);
  if (name == "depth") return int_value(1);
  if (name == "depth0") return int_value(0);
  if (name == "previtem" && i > 0) return loop.loop_items[loop.loop_index - 1];
  if (name == "nextitem" && i < n - 1) return loop.loop_items[loop.loop_index + 1];
  return Value();
}
Value float_value(double d) { return Value(Json(d)); }

// Python's slice.indices(n): the positions a slice visits.
std::vector<std::size_t> slice_positions(std::size_t size, const Value& start_value,
                                         const Value& stop_value, const Value& step_value) {
  auto bound = [](const Value& v, const char* what) -> std::optional<std::int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    const auto i = as_int(v);
    if (!i) throw EvalError(fmt::format("slice {} must be an int, not '{}'", what, v.type_name()));
    return i;
  };
  const auto n = static_cast<std::int64_t>(size);
  const std::int64_t step = bound(step_value, "step").value_or(1);
  if (step == 0) throw EvalError("slice step cannot be zero");
  auto clamp = [&](std::optional<std::int64_t> i, std::int64_t fallback) {
    if (!i) return fallback;
    std::int64_t v = *i < 0 ? *i + n : *i;
    if (step > 0) return std::clamp<std::int64_t>(v, 0, n);
    return std::clamp<std::int64_t>(v, -1, n - 1);
  };
  const std::int64_t start = clamp(bound(start_value, "start"), step > 0 ? 0 : n - 1);
  const std::int64_t stop = clamp(bound(stop_value, "stop"), step > 0 ? n : -1);
  std::vector<std::size_t> positions;
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop;) {
    positions.push_back(static_cast<std::size_t>(i));
    if (__builtin_add_overflow(i, step, &i)) break;
  }
  return positions;
}

Value int_binary(BinaryOp op, std::int64_t x, std::int64_t y) {
  std::int64_t r = 0;
  bool overflow = false;
  switch (op) {
    case BinaryOp::kAdd: overflow = __builtin_add_overflow(x, y, &r); break;
    case BinaryOp::kSubtract: overflow = __builtin_sub_overflow(x, y, &r); break;
    case BinaryOp::kMultiply: overflow = __builtin_mul_overflow(x, y, &r); break;
    case BinaryOp::kDivide:
      if (y == 0) throw EvalError("division by zero");
      return float_value(static_cast<double>(x) / static_cast<double>(y));
    case BinaryOp::kFloorDivide:
    case BinaryOp::kModulo: {
      if (y == 0) throw EvalError("integer division or modulo by zero");
      if (x == std::numeric_limits<std::int64_t>::min() && y == -1) {
        if (op == BinaryOp::kModulo) return int_value(0);
        overflow = true;
        break;
      }
      std::int64_t q = x / y;
      std::int64_t m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;
      return int_value(op == BinaryOp::kFloorDivide ? q : m);
    }
    case BinaryOp::kPower: {
      if (y < 0) return float_value(std::pow(static_cast<double>(x), static_cast<double>(y)));
      r = 1;
      for (std::int64_t base = x, e = y; e > 0 && !overflow; e >>= 1) {
        if (e & 1) overflow = __builtin_mul_overflow(r, base, &r);
        if (e > 1 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
      }
      break;
    }
  }
  if (overflow) throw EvalError("integer overflow (ints are 64-bit here)");
  return int_value(r);
}

Value float_binary(BinaryOp op, double x, double y) {
  switch (op) {
    case BinaryOp::kAdd: return float_value(x + y);
    case BinaryOp::kSubtract: return float_value(x - y);
    case BinaryOp::kMultiply: return float_value(x * y);
    case BinaryOp::kPower: return float_value(std::pow(x, y));
    default: break;
  }
  if (y == 0) throw EvalError("float division by zero");
  if (op == BinaryOp::kDivide) return float_value(x / y);
  if (op == BinaryOp::kFloorDivide) return float_value(std::floor(x / y));
  double m = std::fmod(x, y);
  if (m != 0 && ((m < 0) != (y < 0))) m += y;
  return float_value(m);
}

// `sequence * count` for a string or list.
Value repeat(const Value& sequence, std::int64_t count, Budget& budget) {
  const std::size_t n = count > 0 ? static_cast<std::size_t>(count) : 0;
  const bool empty = sequence.is_string() ? sequence.str().empty() : sequence.json().empty();
  if (n == 0 || empty) return Value(sequence.is_string() ? Json("") : Json::array());
  if (sequence.is_string()) {
    const std::string& s = sequence.str();
    if (!s.empty() && n > kMaxChatOutputBytes / s.size())
      check_string_size(kMaxChatOutputBytes + 1);
    budget.charge(1 + s.size() * n / 64);
    std::string out;
    out.reserve(s.size() * n);
    for (std::size_t i = 0; i < n; ++i) out.append(s);
    return make_string(std::move(out));
  }
  const Json& list = sequence.json();
  if (n > kMaxListSize / list.size()) {
    throw EvalError(fmt::format("a list of more than {} elements", kMaxListSize));
  }
  budget.charge(1 + copy_cost(list) * n);
  Json out = Json::array();
  for (std::size_t i = 0; i < n; ++i) {
    for (const Json& item : list) out.push_back(item);
  }
  return Value(std::move(out));
}

}  // namespace

std::size_t scan_cost(const Value& value) {
  return value.is_string() ? value.str().size() / 64 : 0;
}

std::size_t copy_cost(const Json& json) {
  if (json.is_string()) return 1 + json.get_ref<const std::string&>().size() / 64;
  std::size_t cost = 1;
  if (json.is_array() || json.is_object()) {
    for (const Json& item : json) cost += copy_cost(item);
  }
  return cost;
}

void Budget::charge(std::size_t steps) {
  if (steps > steps_left_) {
    throw EvalError(fmt::format("the template did more than {} steps of work (a loop without end?)",
                                kMaxChatRenderSteps));
  }
  steps_left_ -= steps;
}

Value attribute(const Value& value, std::string_view name) {
  if (value.is_dict()) {
    const auto it = value.json().find(name);
    return it == value.json().end() ? Value() : value.child(*it);
  }
  if (value.is_object() && value.object().is_namespace) {
    const auto& attributes = value.object().attributes;
    const auto it = attributes.find(name);
    return it == attributes.end() ? Value() : it->second;
  }
  if (value.is_object()) return loop_attribute(value.object(), name);
  return Value();
}

Value item(const Value& value, const Value& key) {
  if (value.is_dict() || value.is_object()) {
    return key.is_string() ? attribute(value, key.str()) : Value();
  }
  const auto index = as_int(key);
  if (!index || !(value.is_list() || value.is_string())) return Value();
  if (value.is_list()) {
    const auto n = static_cast<std::int64_t>(value.json().size());
    const std::int64_t i = *index < 0 ? *index + n : *index;
    return i < 0 || i >= n ? Value() : value.child(value.json()[static_cast<std::size_t>(i)]);
  }
  const std::vector<std::size_t> at = code_point_offsets(value.str());
  const auto n = static_cast<std::int64_t>(at.size() - 1);
  const std::int64_t i = *index < 0 ? *index + n : *index;
  if (i < 0 || i >= n) return Value();
  const auto k = static_cast<std::size_t>(i);
  return Value(Json(value.str().substr(at[k], at[k + 1] - at[k])));
}

Value slice(const Value& value, const Value& start, const Value& stop, const Value& step,
            Budget& budget) {
  if (value.is_list()) {
    Json out = Json::array();
    for (const std::size_t i : slice_positions(value.json().size(), start, stop, step)) {
      budget.charge(copy_cost(value.json()[i]));
      out.push_back(value.json()[i]);
    }
    return Value(std::move(out));
  }
  if (value.is_string()) {
    const std::string& s = value.str();
    const std::vector<std::size_t> at = code_point_offsets(s);
    budget.charge(at.size() / 64);
    std::string out;
    for (const std::size_t i : slice_positions(at.size() - 1, start, stop, step)) {
      out.append(s, at[i], at[i + 1] - at[i]);
    }
    return Value(Json(std::move(out)));
  }
  if (value.is_undefined()) return Value();
  throw EvalError(fmt::format("'{}' cannot be sliced", value.type_name()));
}

std::vector<Value> iterate(const Value& value, Budget& budget) {
  std::vector<Value> items;
  if (value.is_undefined()) return items;
  if (value.is_list()) {
    items.reserve(value.json().size());
    for (const Json& item : value.json()) {
      items.push_back(value.child(item));
      budget.charge(1 + scan_cost(items.back()));
    }
  } else if (value.is_dict()) {
    budget.charge(value.json().size());
    for (const auto& [key, unused] : value.json().items()) items.emplace_back(Json(key));
  } else if (value.is_string()) {
    const std::vector<std::size_t> at = code_point_offsets(value.str());
    budget.charge(at.size());
    for (std::size_t k = 0; k + 1 < at.size(); ++k) {
      items.emplace_back(Json(value.str().substr(at[k], at[k + 1] - at[k])));
    }
  } else {
    throw EvalError(fmt::format("'{}' is not iterable", value.type_name()));
  }
  return items;
}

std::size_t length(const Value& value) {
  if (value.is_undefined()) return 0;
  if (value.is_string()) return code_point_count(value.str());
  if (value.is_list() || value.is_dict()) return value.json().size();
  throw EvalError(fmt::format("'{}' has no length", value.type_name()));
}

Value binary(BinaryOp op, const Value& a, const Value& b, Budget& budget) {
  static constexpr std::string_view kSymbols[] = {"+", "-", "*", "/", "//", "%", "**"};
  const std::string_view symbol = kSymbols[static_cast<int>(op)];
  if (a.is_number() && b.is_number()) {
    const auto x = as_int(a);
    const auto y = as_int(b);
    if (x && y) return int_binary(op, *x, *y);
    return float_binary(op, as_double(a), as_double(b));
  }
  if (op == BinaryOp::kAdd && a.is_string() && b.is_string()) {
    budget.charge(1 + (a.str().size() + b.str().size()) / 64);
    return make_string(a.str() + b.str());
  }
  if (op == BinaryOp::kAdd && a.is_list() && b.is_list()) {
    if (a.json().size() + b.json().size() > kMaxListSize) {
      throw EvalError(fmt::format("a list of more than {} elements", kMaxListSize));
    }
    budget.charge(copy_cost(a.json()) + copy_cost(b.json()));
    Json out = a.json();
    for (const Json& item : b.json()) out.push_back(item);
    return Value(std::move(out));
  }
  if (op == BinaryOp::kMultiply) {
    if ((a.is_string() || a.is_list()) && is_int(b)) return repeat(a, *as_int(b), budget);
    if ((b.is_string() || b.is_list()) && is_int(a)) return repeat(b, *as_int(a), budget);
  }
  if (op == BinaryOp::kModulo && a.is_string()) {
    throw EvalError("string formatting with '%' is not supported; use '~' or '+'");
  }
  unsupported_operands(symbol, a, b);
}

Value negate(const Value& value) {
  if (!value.is_number()) {
    throw EvalError(fmt::format("bad operand type for unary -: '{}'", value.type_name()));
  }
  if (const auto i = as_int(value)) {
    if (*i == std::numeric_limits<std::int64_t>::min()) {
      throw EvalError("integer overflow (ints are 64-bit here)");
    }
    return int_value(-*i);
  }
  return float_value(-as_double(value));
}

bool contains(const Value& haystack, const Value& needle) {
  if (haystack.is_undefined()) return false;
  if (haystack.is_string()) {
    if (!needle.is_string()) {
      throw EvalError(
          fmt::format("'in <string>' needs a string on the left, not '{}'", needle.type_name()));
    }
    return haystack.str().find(needle.str()) != std::string::npos;
  }
  if (haystack.is_list()) {
    for (const Json& item : haystack.json()) {
      if (equal(haystack.child(item), needle)) return true;
    }
    return false;
  }
  if (haystack.is_dict()) return needle.is_string() && haystack.json().contains(needle.str());
  throw EvalError(fmt::format("'in' needs a string, list or dict on the right, not '{}'",
                              haystack.type_name()));
}

bool compare(CompareOp op, const Value& a, const Value& b) {
  switch (op) {
    case CompareOp::kEqual: return equal(a, b);
    case CompareOp::kNotEqual: return !equal(a, b);
    case CompareOp::kIn: return contains(b, a);
    case CompareOp::kNotIn: return !contains(b, a);
    default: break;
  }
  const bool swap = op == CompareOp::kGreater || op == CompareOp::kLessEqual;
  const std::optional<bool> lt = swap ? less(b, a) : less(a, b);
  if (!lt) {
    static constexpr std::string_view kSymbols[] = {
        "==", "!=", "<", "<=", ">", ">=", "in", "not in"};
    throw EvalError(fmt::format("'{}' is not supported between '{}' and '{}'",
                                kSymbols[static_cast<int>(op)], a.type_name(), b.type_name()));
  }
  // a <= b is not (b < a); a >= b is not (a < b).
  return op == CompareOp::kLess || op == CompareOp::kGreater ? *lt : !*lt;
}

void check_string_size(std::size_t size_bytes) {
  if (size_bytes > kMaxChatOutputBytes) {
    throw EvalError(fmt::format("a string longer than {} MiB", kMaxChatOutputBytes >> 20));
  }
}

Value make_string(std::string s) {
  check_string_size(s.size());
  return Value(Json(std::move(s)));
}

Value make_list(const std::vector<Value>& items, Budget& budget) {
  if (items.size() > kMaxListSize) {
    throw EvalError(fmt::format("a list of more than {} elements", kMaxListSize));
  }
  Json out = Json::array();
  for (const Value& item : items) {
    std::optional<Json> json = item.to_json();
    if (json && deeper_than(*json, kMaxValueDepth - 1)) {
      throw EvalError(fmt::format("values nested deeper than {} levels", kMaxValueDepth));
    }
    budget.charge(json ? copy_cost(*json) : 1);
    out.push_back(json ? std::move(*json) : Json());
  }
  return Value(std::move(out));
}

}  // namespace ferry::models::chat
