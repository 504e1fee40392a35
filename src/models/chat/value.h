#pragma once
// The values a chat template computes with: JSON data (null, bool, int, float, string, list,
// dict), Jinja's `undefined`, and objects with attributes (a `namespace(...)` or a `loop`).
// Values are immutable and cheap to copy: a value read from a list or dict shares the document
// it is part of, so a template walking `messages` copies nothing.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::models::chat {

// A value nested deeper than this (a list in a list in ..., counted from the outermost) is an
// error, so the recursive walks below stay within the stack.
inline constexpr int kMaxValueDepth = 256;

// A template misused a value (a type error, an undefined operand, a value nested too deep).
// The renderer adds the origin and line:column and rethrows it as ferry::InvalidArgument.
class EvalError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Insertion-ordered, as Python dicts are: tojson writes keys in the order the caller gave them.
using Json = nlohmann::ordered_json;

class Value;

// A namespace(...) (whose attributes `set ns.x = ...` may change) or a loop's `loop`: one per
// loop, moved on at each iteration, as in Jinja; its attributes are computed when read.
struct Object {
  bool is_namespace = false;                             // else a loop
  std::map<std::string, Value, std::less<>> attributes;  // a namespace's
  std::vector<Value> loop_items;                         // a loop's items
  std::size_t loop_index = 0;                            // the current one
};

// Throws EvalError when `value` may not be an attribute of a namespace: another namespace,
// which could make a cycle of references (ns.self = ns) that would never be freed.
void check_namespace_value(const Value& value);

class Value {
 public:
  Value() = default;  // undefined
  // An owned JSON value.
  explicit Value(Json json);
  // `at`, a part of the document `owner` keeps alive.
  static Value view(const std::shared_ptr<const Json>& owner, const Json* at);
  static Value object(std::shared_ptr<Object> object);

  bool is_undefined() const { return json_ == nullptr && object_ == nullptr; }
  bool is_json() const { return json_ != nullptr; }
  bool is_object() const { return object_ != nullptr; }
  // Only when is_json().
  const Json& json() const { return *json_; }
  // Only when is_object().
  Object& object() const { return *object_; }

  bool is_string() const { return is_json() && json_->is_string(); }
  bool is_list() const { return is_json() && json_->is_array(); }
  bool is_dict() const { return is_json() && json_->is_object(); }
  bool is_none() const { return is_json() && json_->is_null(); }
  // int, float or bool (a bool is an int in Python).
  bool is_number() const { return is_json() && (json_->is_number() || json_->is_boolean()); }
  const std::string& str() const { return json_->get_ref<const std::string&>(); }

  // The element `at` of this list or dict, sharing this value's document.
  Value child(const Json& at) const { return view(json_, &at); }

  // Python's truth value; undefined is false, objects are true.
  bool truthy() const;
  // "undefined", "none", "bool", "int", "float", "string", "list", "dict", "namespace", "loop".
  std::string_view type_name() const;
  // The value as JSON (an object's attributes as a dict); nullopt for undefined.
  std::optional<Json> to_json() const;

 private:
  std::shared_ptr<const Json> json_;
  std::shared_ptr<Object> object_;
};

// The value as an int if it is an int or bool (or a float with an integral value when
// `allow_integral_float`), else nullopt. An unsigned above INT64_MAX is not an int here.
std::optional<std::int64_t> as_int(const Value& v, bool allow_integral_float = false);
// An int, float or bool as a double (only when is_number()).
double as_double(const Value& v);
bool is_int(const Value& v);  // int or bool

// Python's str() of the value, as `{{ value }}` prints it: undefined prints nothing, None as
// "None", True as "True", lists and dicts in Python's repr.
void append_str(std::string& out, const Value& v);
std::string to_str(const Value& v);

// Python's == (1 == 1.0 == True; dicts equal whatever their key order).
bool equal(const Value& a, const Value& b);
// Python's < for numbers, strings (by code point) and lists; nullopt where Python raises.
std::optional<bool> less(const Value& a, const Value& b);

// Whether `json` has lists or dicts nested more than `max_depth` levels (a scalar has depth 0).
bool deeper_than(const Json& json, int max_depth);

// How transformers' `tojson` filter calls Python's json.dumps.
struct JsonStyle {
  bool ensure_ascii = false;          // \uXXXX for every non-ASCII code point
  std::optional<std::string> indent;  // one line when absent, else one item a line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string dump_json(const Json& value, const JsonStyle& style);

}  // namespace ferry::models::chat
