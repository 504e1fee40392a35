#pragma once
// Names and tokens read from files go into one-line error messages: control bytes are escaped.

#include <string>
#include <string_view>

namespace ferry::io {

// `text` with bytes below 0x20 and 0x7f written as \xNN.
std::string printable(std::string_view text);

}  // namespace ferry::io
