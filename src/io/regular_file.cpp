#include "io/regular_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/core/error.h"

namespace ferry::io {
namespace {

std::string_view kind_of(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a plain file";
}

IoError os_error(std::string_view what, const std::filesystem::path& path, int err) {
  return IoError(fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(err)),
                 ErrorFields{.file = path.string(), .actual = std::strerror(err)});
}

}  // namespace

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

std::optional<RegularFile> try_open_regular_file(const std::filesystem::path& path,
                                                 int extra_flags, int& open_errno) {
  // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags));
  if (fd.get() < 0) {
    open_errno = errno;
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw os_error("stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    throw IoError(fmt::format("{} is not a regular file ({}): ferry reads only regular files",
                              path.string(), kind_of(st.st_mode)),
                  ErrorFields{.file = path.string(),
                              .expected = "a regular file",
                              .actual = std::string(kind_of(st.st_mode))});
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    throw os_error("configure", path, errno);
  }
  return RegularFile{.fd = std::move(fd),
                     .size_bytes = static_cast<std::uint64_t>(st.st_size),
                     .device = static_cast<std::uint64_t>(st.st_dev),
                     .inode = static_cast<std::uint64_t>(st.st_ino)};
}

RegularFile open_regular_file(const std::filesystem::path& path, int extra_flags) {
  int err = 0;
  auto file = try_open_regular_file(path, extra_flags, err);
  if (!file) throw os_error("open", path, err);
  return std::move(*file);
}

}  // namespace ferry::io
