#pragma once
// Python's string behaviour on UTF-8 text, as chat templates see it through Jinja: code-point
// indexing, whitespace, case changes, strip/split/replace, and the repr() of strings and floats.
// Case changes map ASCII letters only; other code points are kept as they are.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::models::chat {

// Byte offsets where each code point of `s` starts, plus s.size() at the end. A byte that does
// not start a valid UTF-8 sequence counts as one code point.
std::vector<std::size_t> code_point_offsets(std::string_view s);
std::size_t code_point_count(std::string_view s);

// Appends the UTF-8 encoding of `code_point` (U+FFFD for a surrogate or one past U+10FFFF).
void append_utf8(std::string& out, std::uint32_t code_point);

// Python's str.strip/lstrip/rstrip: `chars` of nullptr strips whitespace (str.isspace()).
std::string_view strip(std::string_view s, const std::string* chars, bool left, bool right);

// Python's str.split: on runs of whitespace when `sep` is nullptr (empty parts dropped), else
// on `sep` (non-empty); at most `max_split` splits when it is non-negative.
std::vector<std::string> split(std::string_view s, const std::string* sep, std::int64_t max_split);

// Python's str.replace (an empty `from` inserts `to` around every code point); `count` < 0:
// every occurrence.
std::string replace(std::string_view s, std::string_view from, std::string_view to,
                    std::int64_t count);

std::string to_upper(std::string_view s);
std::string to_lower(std::string_view s);
// Python's str.capitalize: the first character upper-case, the rest lower-case.
std::string capitalize(std::string_view s);
// Python's str.title: each run of letters starts upper-case and goes on lower-case.
std::string python_title(std::string_view s);
// Jinja's `title` filter: words start after '-', whitespace, '(', '{', '[' or '<'.
std::string jinja_title(std::string_view s);

// Python's repr() of a str: quoted, with escapes.
std::string python_repr(std::string_view s);
// Python's repr() of a float ("1.0", "0.1", "1e-05", "1e+16", "inf", "nan").
std::string python_float(double d);
// `s` as a JSON string literal, quoted, as Python's json.dumps writes it; `ensure_ascii` escapes
// every non-ASCII code point as \uXXXX.
void append_json_string(std::string& out, std::string_view s, bool ensure_ascii);

}  // namespace ferry::models::chat
