#include "cli/paths.h"

#include <fmt/format.h>

#include <string>

#include "ferry/core/error.h"

namespace ferry::cli {
namespace {

namespace fs = std::filesystem;

// What is at `path`, in words: "nothing", "a file", "a folder", "a FIFO", ...
std::string what_is(const fs::file_status& status) {
  switch (status.type()) {
    case fs::file_type::not_found: return "nothing";
    case fs::file_type::regular: return "a file";
    case fs::file_type::directory: return "a folder";
    case fs::file_type::fifo: return "a FIFO";
    case fs::file_type::socket: return "a socket";
    case fs::file_type::block:
    case fs::file_type::character: return "a device";
    default: return "not a file or folder";
  }
}

[[noreturn]] void wrong_kind(std::string_view what, const fs::path& path, std::string_view actual,
                             std::string_view expected) {
  throw IoError(
      fmt::format("{} {} is {}: expected {}", what, path.string(), actual, expected),
      ErrorFields{
          .file = path.string(), .expected = std::string(expected), .actual = std::string(actual)});
}

}  // namespace

void require_path(std::string_view what, const fs::path& path, PathKind kind) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found || (ec && !fs::exists(status))) {
    throw IoError(fmt::format("{} {} does not exist", what, path.string()),
                  ErrorFields{.file = path.string(),
                              .expected = kind == PathKind::kFolder ? "a folder"
                                          : kind == PathKind::kFile ? "a file"
                                                                    : "a file or folder",
                              .actual = "nothing"});
  }
  if (ec) {
    throw IoError(fmt::format("{} {}: {}", what, path.string(), ec.message()),
                  ErrorFields{.file = path.string()});
  }
  const bool is_file = fs::is_regular_file(status);
  const bool is_folder = fs::is_directory(status);
  if (kind == PathKind::kFolder && !is_folder) wrong_kind(what, path, what_is(status), "a folder");
  if (kind == PathKind::kFile && !is_file) wrong_kind(what, path, what_is(status), "a file");
  if (kind == PathKind::kAny && !is_file && !is_folder) {
    wrong_kind(what, path, what_is(status), "a file or folder");
  }
}

void require_output_file(std::string_view what, const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) wrong_kind(what, path, "a folder", "a file to write");
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  require_path(fmt::format("{}: the folder", what), parent, PathKind::kFolder);
}

void require_output_folder(std::string_view what, const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() != fs::file_type::not_found && !fs::is_directory(status)) {
    wrong_kind(what, path, what_is(status), "a folder");
  }
}

}  // namespace ferry::cli
