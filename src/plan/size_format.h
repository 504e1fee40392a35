#pragma once
// Text forms shared by planning messages: sizes in bytes as Accelerate prints them, and Python
// list reprs for the messages and trace lines copied from Accelerate.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ferry::plan {

// A size in bits printed in bytes: "236" for whole bytes, "0.125" otherwise (exact: eighths).
std::string format_size_bits(std::int64_t bits);

// Python's repr of a list of strings: "['a', 'b']".
std::string py_list(std::span<const std::string> items);
// Python's repr of a list of lists of strings: "[['a', 'b'], ['c']]".
std::string py_nested_list(std::span<const std::vector<std::string>> groups);

}  // namespace ferry::plan
