#include "io/atomic_file.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "ferry/core/error.h"

namespace ferry::io {
namespace {

IoError os_error(std::string_view what, const std::filesystem::path& path, int err) {
  return IoError(fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(err)),
                 ErrorFields{.file = path.string(), .actual = std::strerror(err)});
}

std::filesystem::path temp_name(const std::filesystem::path& path) {
  static std::atomic<unsigned> counter{0};
  return path.string() + fmt::format(".tmp-{}-{}", ::getpid(), counter.fetch_add(1));
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path path, mode_t mode)
    : path_(std::move(path)), temp_path_(temp_name(path_)) {
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd_ < 0) throw os_error("create", temp_path_, errno);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  // write(2) moves at most ~2 GiB per call on Linux; loop over short writes and EINTR.
  const std::byte* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, std::min<std::size_t>(left, std::size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw os_error("write", temp_path_, errno);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::write(std::string_view text) {
  write(std::as_bytes(std::span<const char>(text.data(), text.size())));
}

void AtomicFile::commit() {
  FERRY_ASSERT(!committed_, "commit() called twice on {}", path_.string());
  // fsync before rename: otherwise a power loss may leave the new name on a zero-length file.
  if (::fsync(fd_) != 0) throw os_error("sync", temp_path_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw os_error("close", temp_path_, errno);
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) throw os_error("rename to", path_, errno);
  committed_ = true;
}

}  // namespace ferry::io
