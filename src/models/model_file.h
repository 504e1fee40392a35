#pragma once
// Reading the small text files of a model folder (config.json, tokenizer.json,
// tokenizer_config.json) with a size limit (private to models).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>

namespace ferry::models::detail {

// The text of `file`, which must be a regular file (symbolic links followed, as in Hugging Face's
// cache) of at most `max_bytes`, checked before reading: a device such as /dev/zero, a FIFO or an
// oversized file fails at once instead of being read until memory runs out. Throws IoError (cannot
// be read, not a regular file) or CorruptFile (too large), naming the file.
std::string read_model_file(const std::filesystem::path& file, std::uint64_t max_bytes);

// A JSON value for an error message: numbers, booleans and null as JSON, strings quoted, cut to
// 40 bytes and with control bytes escaped, arrays and objects by kind only, so that a message
// never carries more of the file than the value in question.
std::string shown(const nlohmann::ordered_json& value);

}  // namespace ferry::models::detail
