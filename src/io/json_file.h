#pragma once
// Reading and writing the small JSON files of checkpoints (sharded index, offload index).
// Private to io: public headers never expose JSON.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "io/atomic_file.h"

namespace ferry::io {

// Parses `text`, keeping key order. Throws CorruptFile naming `file` on a syntax error, on a key
// that appears twice in one object (JSON parsers silently keep the last; for a checkpoint index
// that hides a conflict), or on nesting deeper than 64 levels.
nlohmann::ordered_json parse_json(std::string_view text, std::string_view file);

// Largest text file read_text_file reads by default: tokenizer.json of large vocabularies is
// tens of MiB; config and index files are far smaller.
inline constexpr std::uint64_t kMaxTextFileBytes = std::uint64_t{64} << 20;

// Reads a whole regular file as text, at most `max_size_bytes` of it. Throws IoError naming the
// file: cannot open or read, not a regular file (a FIFO or device would block or never end),
// or larger than `max_size_bytes`.
std::string read_text_file(const std::filesystem::path& path,
                           std::uint64_t max_size_bytes = kMaxTextFileBytes);

// Writes `text` to `path` atomically (temporary name, then rename) with `mode`. Throws IoError.
void write_text_file(const std::filesystem::path& path, std::string_view text,
                     mode_t mode = kPublicFileMode);

}  // namespace ferry::io
