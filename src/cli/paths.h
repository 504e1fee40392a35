#pragma once
// Paths given on the command line, checked before anything is loaded: one message for each way
// a path can be wrong ("does not exist", "is a file: expected a folder", ...).

#include <filesystem>
#include <string_view>

namespace ferry::cli {

enum class PathKind {
  kFile,    // a regular file (or a link to one)
  kFolder,  // a directory
  kAny,     // either
};

// `path`, given as `what` ("MODEL", "--prompt-file"), must exist and be of `kind`. Throws
// IoError "<what> <path> does not exist" or "<what> <path> is a file: expected a folder ..."
// (and the reverse), with ErrorFields naming the file, expected and actual kinds.
void require_path(std::string_view what, const std::filesystem::path& path, PathKind kind);

// A file ferry is to write: its folder must exist, and the path must not be a folder.
void require_output_file(std::string_view what, const std::filesystem::path& path);

// A folder ferry is to create or write into: where it exists, it must be a folder.
void require_output_folder(std::string_view what, const std::filesystem::path& path);

}  // namespace ferry::cli
