#include "io/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/core/error.h"
#include "io/mapped_regions.h"
#include "io/regular_file.h"

namespace ferry::io {
namespace {

IoError os_error(std::string_view what, const std::filesystem::path& path, int err) {
  return IoError(fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(err)),
                 ErrorFields{.file = path.string(), .actual = std::strerror(err)});
}

// madvise wants a page-aligned start; widen the range down to the page boundary.
void advise(std::byte* base, std::uint64_t size, std::uint64_t offset, std::uint64_t length,
            int advice) noexcept {
  if (offset >= size || length == 0) return;
  length = std::min(length, size - offset);
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t start = offset / page * page;
  ::madvise(base + start, offset + length - start, advice);
}

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
  const RegularFile file = open_regular_file(path);
  const std::uint64_t size = file.size_bytes;
  if (size == 0) {
    throw CorruptFile(
        fmt::format("{} is empty: expected at least 8 bytes, got 0", path.string()),
        ErrorFields{.file = path.string(), .expected = "at least 8 bytes", .actual = "0 bytes"});
  }
  // MAP_PRIVATE + PROT_WRITE: tensors viewing the mapping may be written in place (LibTorch has
  // no read-only tensors); such writes land in private copy-on-write pages, never in the file.
  // MAP_NORESERVE: a writable private mapping is otherwise charged in full against the commit
  // limit, and the kernel refuses to map a checkpoint larger than RAM — the very files ferry is
  // for. Only pages actually written are ever private copies.
  void* data =
      ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, file.fd.get(), 0);
  if (data == MAP_FAILED) throw os_error("map", path, errno);
  // The descriptor closes here: the mapping keeps the file itself alive.
  return std::shared_ptr<const MappedFile>(
      new MappedFile(path, static_cast<std::byte*>(data), size, file.device, file.inode));
}

MappedFile::MappedFile(std::filesystem::path path, std::byte* data, std::uint64_t size_bytes,
                       std::uint64_t device, std::uint64_t inode)
    : path_(std::move(path)),
      data_(data),
      size_bytes_(size_bytes),
      device_(device),
      inode_(inode) {
  std::error_code ec;
  absolute_path_ = std::filesystem::absolute(path_, ec);
  if (ec) absolute_path_ = path_;
  region_slot_ = register_mapping(data_, size_bytes_, path_.c_str());
}

MappedFile::~MappedFile() {
  unregister_mapping(region_slot_);
  ::munmap(data_, size_bytes_);
}

void MappedFile::read(std::uint64_t offset_bytes, std::span<std::byte> dest) const {
  FERRY_ASSERT(offset_bytes <= size_bytes_ && dest.size() <= size_bytes_ - offset_bytes,
               "read of {} bytes at {} past the end of {}", dest.size(), offset_bytes,
               path_.string());
  if (dest.empty()) return;
  const RegularFile file = open_regular_file(absolute_path_);
  if (file.device != device_ || file.inode != inode_) {
    throw IoError(fmt::format("cannot read {}: the path names another file than the one mapped "
                              "(was the checkpoint replaced while ferry ran?)",
                              path_.string()),
                  ErrorFields{.file = path_.string(),
                              .expected = "the file mapped",
                              .actual = "another file"});
  }
  std::size_t done = 0;
  while (done < dest.size()) {
    const std::size_t chunk = std::min<std::size_t>(dest.size() - done, std::size_t{1} << 30);
    const ssize_t n = ::pread(file.fd.get(), dest.data() + done, chunk,
                              static_cast<off_t>(offset_bytes + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw os_error("read", path_, errno);
    if (n == 0) {
      throw IoError(fmt::format("cannot read {}: file shrank while mapped", path_.string()),
                    ErrorFields{.file = path_.string()});
    }
    done += static_cast<std::size_t>(n);
  }
}

void MappedFile::advise_willneed(std::uint64_t offset_bytes,
                                 std::uint64_t length_bytes) const noexcept {
  advise(data_, size_bytes_, offset_bytes, length_bytes, MADV_WILLNEED);
}

void MappedFile::advise_sequential(std::uint64_t offset_bytes,
                                   std::uint64_t length_bytes) const noexcept {
  advise(data_, size_bytes_, offset_bytes, length_bytes, MADV_SEQUENTIAL);
}

}  // namespace ferry::io
