#include "models/chat/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "ferry/models/chat_template.h"
#include "models/chat/text.h"

namespace ferry::models::chat {
namespace {

bool json_is_number(const Json& j) { return j.is_number() || j.is_boolean(); }

std::optional<std::int64_t> json_as_int(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  if (j.is_number_unsigned()) {
    const auto u = j.get<std::uint64_t>();
    if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return static_cast<std::int64_t>(u);
    }
    return std::nullopt;
  }
  if (j.is_number_integer()) return j.get<std::int64_t>();
  return std::nullopt;
}

double json_as_double(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1.0 : 0.0;
  return j.get<double>();
}

// Python's == or < on two numbers: exact between ints, in doubles otherwise.
bool number_equal(const Json& a, const Json& b) {
  const auto ia = json_as_int(a);
  const auto ib = json_as_int(b);
  if (ia && ib) return *ia == *ib;
  return json_as_double(a) == json_as_double(b);
}

bool number_less(const Json& a, const Json& b) {
  const auto ia = json_as_int(a);
  const auto ib = json_as_int(b);
  if (ia && ib) return *ia < *ib;
  return json_as_double(a) < json_as_double(b);
}

void check_depth(int depth) {
  if (depth > kMaxValueDepth) {
    throw EvalError(fmt::format("values nested deeper than {} levels", kMaxValueDepth));
  }
}

std::optional<Json> object_to_json(const Object& object, int depth);

std::optional<Json> value_to_json(const Value& v, int depth) {
  check_depth(depth);
  if (v.is_json()) return v.json();
  if (v.is_object()) return object_to_json(v.object(), depth);
  return std::nullopt;
}

std::optional<Json> object_to_json(const Object& object, int depth) {
  if (!object.is_namespace) throw EvalError("a loop object cannot be made JSON");
  Json out = Json::object();
  for (const auto& [name, value] : object.attributes) {
    std::optional<Json> j = value_to_json(value, depth + 1);
    out[name] = j ? std::move(*j) : Json();
  }
  return out;
}

void append_json_str(std::string& out, const Json& j, bool quoted, int depth) {
  check_depth(depth);
  switch (j.type()) {
    case Json::value_t::null: out.append("None"); break;
    case Json::value_t::boolean: out.append(j.get<bool>() ? "True" : "False"); break;
    case Json::value_t::number_integer: out.append(std::to_string(j.get<std::int64_t>())); break;
    case Json::value_t::number_unsigned: out.append(std::to_string(j.get<std::uint64_t>())); break;
    case Json::value_t::number_float: out.append(python_float(j.get<double>())); break;
    case Json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      quoted ? out.append(python_repr(s)) : out.append(s);
      break;
    }
    case Json::value_t::array: {
      out.push_back('[');
      for (std::size_t i = 0; i < j.size(); ++i) {
        if (i > 0) out.append(", ");
        append_json_str(out, j[i], /*quoted=*/true, depth + 1);
      }
      out.push_back(']');
      break;
    }
    case Json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [key, item] : j.items()) {
        if (!first) out.append(", ");
        first = false;
        out.append(python_repr(key)).append(": ");
        append_json_str(out, item, /*quoted=*/true, depth + 1);
      }
      out.push_back('}');
      break;
    }
    default: out.append("<binary>"); break;
  }
}

void append_str_at(std::string& out, const Value& v, int depth) {
  if (v.is_json()) return append_json_str(out, v.json(), /*quoted=*/false, depth);
  if (!v.is_object()) return;  // undefined prints nothing
  const Object& object = v.object();
  if (!object.is_namespace) {
    out.append(fmt::format("<LoopContext {}/{}>", object.loop_index + 1, object.loop_items.size()));
    return;
  }
  out.append("<Namespace {");
  bool first = true;
  for (const auto& [name, value] : object.attributes) {
    if (!first) out.append(", ");
    first = false;
    out.append(python_repr(name)).append(": ");
    if (value.is_string()) {
      out.append(python_repr(value.str()));
    } else {
      append_str_at(out, value, depth + 1);
    }
  }
  out.append("}>");
}

bool json_equal(const Json& a, const Json& b, int depth) {
  check_depth(depth);
  if (json_is_number(a) && json_is_number(b)) return number_equal(a, b);
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!json_equal(a[i], b[i], depth + 1)) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (const auto& [key, item] : a.items()) {
      const auto it = b.find(key);
      if (it == b.end() || !json_equal(item, *it, depth + 1)) return false;
    }
    return true;
  }
  return a == b;
}

std::optional<bool> json_less(const Json& a, const Json& b, int depth) {
  check_depth(depth);
  if (json_is_number(a) && json_is_number(b)) return number_less(a, b);
  if (a.is_string() && b.is_string())
    return a.get_ref<const std::string&>() < b.get_ref<const std::string&>();
  if (a.is_array() && b.is_array()) {
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (json_equal(a[i], b[i], depth + 1)) continue;
      return json_less(a[i], b[i], depth + 1);
    }
    return a.size() < b.size();
  }
  return std::nullopt;
}

void dump_at(std::string& out, const Json& j, const JsonStyle& style, int depth) {
  check_depth(depth);
  auto newline = [&](int level) {
    out.push_back('\n');
    for (int i = 0; i < level; ++i) out.append(*style.indent);
  };
  switch (j.type()) {
    case Json::value_t::null: out.append("null"); break;
    case Json::value_t::boolean: out.append(j.get<bool>() ? "true" : "false"); break;
    case Json::value_t::number_integer: out.append(std::to_string(j.get<std::int64_t>())); break;
    case Json::value_t::number_unsigned: out.append(std::to_string(j.get<std::uint64_t>())); break;
    case Json::value_t::number_float: {
      const double d = j.get<double>();
      if (d != d) {
        out.append("NaN");
      } else if (d == std::numeric_limits<double>::infinity()) {
        out.append("Infinity");
      } else if (d == -std::numeric_limits<double>::infinity()) {
        out.append("-Infinity");
      } else {
        out.append(python_float(d));
      }
      break;
    }
    case Json::value_t::string:
      append_json_string(out, j.get_ref<const std::string&>(), style.ensure_ascii);
      break;
    case Json::value_t::array:
    case Json::value_t::object: {
      const bool is_array = j.is_array();
      if (j.empty()) {
        out.append(is_array ? "[]" : "{}");
        break;
      }
      out.push_back(is_array ? '[' : '{');
      std::vector<std::pair<std::string_view, const Json*>> items;
      if (is_array) {
        for (const Json& item : j) items.emplace_back(std::string_view(), &item);
      } else {
        for (const auto& [key, item] : j.items()) items.emplace_back(key, &item);
        if (style.sort_keys) {
          std::stable_sort(items.begin(), items.end(),
                           [](const auto& x, const auto& y) { return x.first < y.first; });
        }
      }
      for (std::size_t i = 0; i < items.size(); ++i) {
        // Indents grow with depth: bound the text as it grows, not after.
        if (out.size() > kMaxChatOutputBytes) {
          throw EvalError(fmt::format("tojson: the text passed {} MiB", kMaxChatOutputBytes >> 20));
        }
        if (i > 0) out.append(style.item_separator);
        if (style.indent) newline(depth + 1);
        if (!is_array) {
          append_json_string(out, items[i].first, style.ensure_ascii);
          out.append(style.key_separator);
        }
        dump_at(out, *items[i].second, style, depth + 1);
      }
      if (style.indent) newline(depth);
      out.push_back(is_array ? ']' : '}');
      break;
    }
    default: throw EvalError("tojson: binary data cannot be written as JSON");
  }
}

}  // namespace

void check_namespace_value(const Value& value) {
  if (value.is_object() && value.object().is_namespace) {
    throw EvalError("a namespace cannot hold another namespace");
  }
}

Value::Value(Json json) : json_(std::make_shared<const Json>(std::move(json))) {}

Value Value::view(const std::shared_ptr<const Json>& owner, const Json* at) {
  Value v;
  v.json_ = std::shared_ptr<const Json>(owner, at);
  return v;
}

Value Value::object(std::shared_ptr<Object> object) {
  Value v;
  v.object_ = std::move(object);
  return v;
}

bool Value::truthy() const {
  if (is_object()) return true;
  if (!is_json()) return false;
  switch (json_->type()) {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return json_->get<bool>();
    case Json::value_t::number_integer: return json_->get<std::int64_t>() != 0;
    case Json::value_t::number_unsigned: return json_->get<std::uint64_t>() != 0;
    case Json::value_t::number_float: return json_->get<double>() != 0.0;
    // (nlohmann's empty() is false for every string, so a string is asked for its size.)
    case Json::value_t::string: return !json_->get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object: return !json_->empty();
    default: return true;
  }
}

std::string_view Value::type_name() const {
  if (is_object()) return object_->is_namespace ? "namespace" : "loop";
  if (!is_json()) return "undefined";
  switch (json_->type()) {
    case Json::value_t::null: return "none";
    case Json::value_t::boolean: return "bool";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "int";
    case Json::value_t::number_float: return "float";
    case Json::value_t::string: return "string";
    case Json::value_t::array: return "list";
    case Json::value_t::object: return "dict";
    default: return "binary";
  }
}

std::optional<Json> Value::to_json() const { return value_to_json(*this, 0); }

std::optional<std::int64_t> as_int(const Value& v, bool allow_integral_float) {
  if (!v.is_json()) return std::nullopt;
  const Json& j = v.json();
  if (!j.is_number_float()) return json_as_int(j);
  if (allow_integral_float) {
    const double d = j.get<double>();
    if (d >= -9.2e18 && d <= 9.2e18 && d == static_cast<double>(static_cast<std::int64_t>(d))) {
      return static_cast<std::int64_t>(d);
    }
  }
  return std::nullopt;
}

double as_double(const Value& v) { return json_as_double(v.json()); }

bool is_int(const Value& v) { return v.is_number() && !v.json().is_number_float(); }

void append_str(std::string& out, const Value& v) { append_str_at(out, v, 0); }

std::string to_str(const Value& v) {
  std::string out;
  append_str(out, v);
  return out;
}

bool equal(const Value& a, const Value& b) {
  if (a.is_json() && b.is_json()) return json_equal(a.json(), b.json(), 0);
  if (a.is_object() || b.is_object())
    return a.is_object() && b.is_object() && &a.object() == &b.object();
  return a.is_undefined() && b.is_undefined();
}

std::optional<bool> less(const Value& a, const Value& b) {
  if (!a.is_json() || !b.is_json()) return std::nullopt;
  return json_less(a.json(), b.json(), 0);
}

bool deeper_than(const Json& json, int max_depth) {
  if (!json.is_array() && !json.is_object()) return false;
  if (max_depth <= 0) return true;
  for (const Json& item : json) {
    if (deeper_than(item, max_depth - 1)) return true;
  }
  return false;
}

std::string dump_json(const Json& value, const JsonStyle& style) {
  std::string out;
  dump_at(out, value, style, 0);
  return out;
}

}  // namespace ferry::models::chat
