#pragma once
// Opening a file ferry is about to read, refusing anything but a regular file before a read
// could block on it (a FIFO named config.json would otherwise hang open() forever). Private to
// io; every reader in io opens through here.

#include <cstdint>
#include <filesystem>
#include <optional>

namespace ferry::io {

// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// A regular file open for reading, with what fstat said of it when opened.
struct RegularFile {
  UniqueFd fd;
  std::uint64_t size_bytes = 0;
  std::uint64_t device = 0;  // st_dev and st_ino: the same pair means the same file
  std::uint64_t inode = 0;
};

// Opens `path` read-only (O_CLOEXEC | `extra_flags`, e.g. O_DIRECT) without blocking: it is
// opened O_NONBLOCK, checked with fstat to be a regular file, and then switched back to
// blocking reads. Throws IoError naming the file: "cannot open <file>: <reason>", or "<file> is
// not a regular file (a FIFO)" for a FIFO, device, socket or directory.
RegularFile open_regular_file(const std::filesystem::path& path, int extra_flags = 0);
// The same, but an open(2) failure returns nullopt with its errno in `open_errno` (so a caller
// can fall back, e.g. when O_DIRECT is refused with EINVAL). Anything but a regular file still
// throws IoError.
std::optional<RegularFile> try_open_regular_file(const std::filesystem::path& path,
                                                 int extra_flags, int& open_errno);

}  // namespace ferry::io
