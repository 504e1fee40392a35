#pragma once
// Printing of tensor shapes in error messages and tables: "[4096, 11008]", "[]" for scalars.
// LibTorch-free: any contiguous range of int64 (std::vector, c10::IntArrayRef) prints.

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace ferry {

std::string shape_string(std::span<const std::int64_t> shape);

inline std::string shape_string(std::initializer_list<std::int64_t> shape) {
  return shape_string(std::span<const std::int64_t>(shape.begin(), shape.size()));
}

template <class Range>
  requires requires(const Range& r) {
    { r.data() } -> std::convertible_to<const std::int64_t*>;
    { r.size() } -> std::convertible_to<std::size_t>;
  }
std::string shape_string(const Range& shape) {
  return shape_string(std::span<const std::int64_t>(shape.data(), shape.size()));
}

}  // namespace ferry
