#pragma once
// The safetensors header (spec §3.1): parsed and validated as a whole before any tensor is
// touched. Separate from the file reader so the parser can be tested and fuzzed on bytes alone.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/core/tensor_info.h"

namespace ferry::io {

// Largest header accepted, as the reference implementation's HeaderTooLarge limit.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

// One tensor of a safetensors file.
struct SafetensorsEntry {
  TensorInfo info;
  std::uint64_t begin_bytes = 0;  // data_offsets[0], relative to the start of the data region
  std::uint64_t end_bytes = 0;    // data_offsets[1], exclusive
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;        // in data order (by begin_bytes)
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent
  std::uint64_t data_offset_bytes = 0;          // 8 + header length: where data begins
};

// Parses and validates the header of the complete file `file_bytes`: the 8-byte little-endian
// length (≥ 8 bytes of file, ≤ kMaxHeaderBytes, inside the file), a UTF-8 JSON object, known
// dtype codes, shape × element size == data_offsets range, ranges inside the data region that
// cover it exactly (no gap, no overlap, nothing after the last), no duplicate names, and
// `__metadata__` as a string→string map. Throws CorruptFile (Unsupported for a valid code ferry
// does not know, e.g. F4) whose message and fields name `file_name` and the tensor.
SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file_bytes,
                                           std::string_view file_name);
// The same, given only the start of the file (at least its first 8 + header-length bytes, or all
// of it when shorter) and the file's size: how a reader validates before touching the data.
SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file_start,
                                           std::uint64_t file_size_bytes,
                                           std::string_view file_name);

// Reads and parses the header of a file of `file_size_bytes` through `read(offset, buffer)`,
// which fills `buffer` from `offset` and returns the bytes it read (fewer only at the end of the
// file): the 8-byte length first, then exactly the header. Both readers of headers use it (pread
// for header-only planning, the mapping's reader for SafetensorsFile::open), so that the header
// is never faulted in through a cold mapping. Throws what parse_safetensors_header throws.
SafetensorsHeader read_safetensors_header_with(
    std::uint64_t file_size_bytes,
    const std::function<std::size_t(std::uint64_t, std::span<std::byte>)>& read,
    std::string_view file_name);

}  // namespace ferry::io
