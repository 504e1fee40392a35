#pragma once
// Helpers of the io tests: a scratch folder per test and hand-made safetensors bytes.

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "scratch_dir.h"

namespace ferry::io::testing {

using ScratchDir = ferry::testing::ScratchDir;

// The bytes of a safetensors file: 8-byte little-endian length, `header` padded with spaces to
// a multiple of 8 (unless `pad` is false), then `data`.
inline std::string safetensors_bytes(std::string header, std::string_view data = {},
                                     bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  const std::uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data);
}

inline std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

inline void write_file(const std::filesystem::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace ferry::io::testing

namespace ferry::io::testing {

// Runs `f` and returns the error of type E it throws, or nullopt when it throws nothing. Any
// other exception escapes and fails the test.
template <class E, class F>
std::optional<E> catch_error(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

}  // namespace ferry::io::testing
