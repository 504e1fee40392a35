#pragma once
// Paths that a file read from disk (an offload index, a sharded index) names inside its own
// folder. Such a file is input, not configuration: it must not make ferry open
// "../../elsewhere" or "/etc/passwd". Private to io; the one rule both indexes share.

#include <filesystem>
#include <optional>
#include <string_view>

namespace ferry::io {

// Whether `name` stays inside its folder as written: not empty, relative, no ".." component and
// no NUL byte ("a/b.safetensors" and "./x" pass; "/x", "../x", "a/../../x" do not).
bool is_confined_name(std::string_view name);

// What a symlink inside the folder may point at.
enum class Symlinks {
  kConfine,  // the target, every link resolved, must also lie inside the folder (resolved)
  kFollow,   // any target: the folder's owner put the link there (the Hugging Face cache links
             // every file of a snapshot into ../../blobs/)
};

// `folder / name` when `name` passes is_confined_name and, with Symlinks::kConfine, its target
// with every symlink resolved lies inside `folder` with its own symlinks resolved (the target
// need not exist yet). nullopt otherwise; the caller raises its own error naming the entry.
std::optional<std::filesystem::path> confined_path(const std::filesystem::path& folder,
                                                   std::string_view name, Symlinks symlinks);

}  // namespace ferry::io
