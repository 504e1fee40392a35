#pragma once
// Reading and writing the small JSON files of checkpoints (sharded index, offload index).
// Private to io: public headers never expose JSON.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace ferry::io {

// Parses `text`, keeping key order. Throws CorruptFile naming `file` on a syntax error, on a key
// that appears twice in one object (JSON parsers silently keep the last; for a checkpoint index
// that hides a conflict), or on nesting deeper than 64 levels.
nlohmann::ordered_json parse_json(std::string_view text, std::string_view file);

// Reads a whole file as text. Throws IoError.
std::string read_text_file(const std::filesystem::path& path);

// Writes `text` to `path` atomically (temporary name, then rename). Throws IoError.
void write_text_file(const std::filesystem::path& path, std::string_view text);

}  // namespace ferry::io
