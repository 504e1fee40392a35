#pragma once
// What a template's operators do to values, with Python's rules: attribute and item lookup,
// slices, iteration, arithmetic, `in`. Misuse throws EvalError.

#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "models/chat/syntax.h"
#include "models/chat/value.h"

namespace ferry::models::chat {

// The most elements one list may have, and the longest string one operation may build.
inline constexpr std::size_t kMaxListSize = std::size_t{1} << 20;

// The work a render may still do; each statement, expression and element visited costs one.
class Budget {
 public:
  explicit Budget(std::size_t steps) : steps_left_(steps) {}
  void charge(std::size_t steps);

 private:
  std::size_t steps_left_;
};

// `value.name`: a dict's key or an object's attribute; undefined when there is none (also on
// undefined and none).
Value attribute(const Value& value, std::string_view name);
// `value[key]`: a dict's key, a list's or string's index (negative from the end); undefined when
// out of range or absent.
Value item(const Value& value, const Value& key);
// `value[start:stop:step]` of a list or string, Python's rules; an absent part is undefined or
// none.
Value slice(const Value& value, const Value& start, const Value& stop, const Value& step,
            Budget& budget);
// The elements `for` visits: a list's items, a dict's keys, a string's characters; none for
// undefined. Charges one step per element, and what reading a string element costs.
std::vector<Value> iterate(const Value& value, Budget& budget);
// Python's len(); undefined has length 0.
std::size_t length(const Value& value);

Value binary(BinaryOp op, const Value& a, const Value& b, Budget& budget);
Value negate(const Value& value);
// `needle in haystack`: a substring, a list element, a dict key; false in undefined.
bool contains(const Value& haystack, const Value& needle);
bool compare(CompareOp op, const Value& a, const Value& b);

// Throws EvalError when a string of `size_bytes` would pass kMaxChatOutputBytes.
void check_string_size(std::size_t size_bytes);
// What reading a string through costs the budget (one per 64 bytes); 0 for other values, as
// operations on lists and dicts charge per element visited.
std::size_t scan_cost(const Value& value);
// What copying `json` costs the budget: one per node, one per 64 bytes of string.
std::size_t copy_cost(const Json& json);

// A string value, its size checked against kMaxChatOutputBytes.
Value make_string(std::string s);
// A list value from `items`; EvalError past kMaxListSize elements or kMaxValueDepth.
Value make_list(const std::vector<Value>& items, Budget& budget);

}  // namespace ferry::models::chat
