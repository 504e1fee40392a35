#include "model_file.h"

#include <system_error>

#include "ferry/core/error.h"
#include "io/json_file.h"
#include "io/printable.h"

namespace ferry::models::detail {

namespace {

[[noreturn]] void too_large(const std::filesystem::path& file, std::uint64_t size_bytes,
                            std::uint64_t max_bytes) {
  throw CorruptFile(
      fmt::format("{}: expected at most {} bytes, got {}", file.string(), max_bytes, size_bytes),
      ErrorFields{.file = file.string(),
                  .expected = fmt::format("at most {} bytes", max_bytes),
                  .actual = fmt::format("{} bytes", size_bytes)});
}

}  // namespace

std::string read_model_file(const std::filesystem::path& file, std::uint64_t max_bytes) {
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(file, error);
  if (error) {
    throw IoError(fmt::format("cannot open {}: {}", file.string(), error.message()),
                  ErrorFields{.file = file.string()});
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw IoError(fmt::format("cannot read {}: not a regular file", file.string()),
                  ErrorFields{.file = file.string(), .expected = "a regular file"});
  }
  const std::uintmax_t size_bytes = std::filesystem::file_size(file, error);
  if (!error && size_bytes > max_bytes) too_large(file, size_bytes, max_bytes);
  std::string text = io::read_text_file(file, max_bytes);  // opens non-blocking, re-checks
  // The file may have grown since it was measured.
  if (text.size() > max_bytes) too_large(file, text.size(), max_bytes);
  return text;
}

std::string shown(const nlohmann::ordered_json& value) {
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  if (!value.is_string()) return value.dump();
  constexpr std::size_t kMaxBytes = 40;
  const std::string& text = value.get_ref<const std::string&>();
  const std::string cut = io::printable(text.substr(0, kMaxBytes));
  return "\"" + cut + (text.size() > kMaxBytes ? "\"..." : "\"");
}

}  // namespace ferry::models::detail
