#pragma once
// Writes a file under a temporary name in the same folder and renames it into place on commit,
// so a crash or an exception never leaves a half-written file at the final path.

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <span>
#include <string_view>

namespace ferry::io {

// Modes of created files (before the umask): a user's checkpoint is readable by others; an
// offload folder's files are copies of weights private to the run.
inline constexpr mode_t kPublicFileMode = 0644;
inline constexpr mode_t kPrivateFileMode = 0600;

class AtomicFile {
 public:
  // Creates "<path>.tmp-<pid>-<n>" beside `path` with `mode` (its final mode once committed).
  // Throws IoError.
  explicit AtomicFile(std::filesystem::path path, mode_t mode = kPublicFileMode);
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends bytes (retrying short writes). Throws IoError; the temporary file is then still
  // removed by the destructor, so a full disk leaves nothing behind.
  void write(std::span<const std::byte> bytes);
  void write(std::string_view text);
  // Flushes to stable storage, then renames over the final path. Throws IoError.
  void commit();

  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace ferry::io
