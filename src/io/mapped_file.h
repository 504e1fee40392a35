#pragma once
// A whole file mapped once (private, copy-on-write), plus positioned reads of the same file for
// copies. Private to io: public headers expose tensors and byte spans, never the mapping itself.
// A mapping holds no file descriptor (a model of a thousand offloaded tensors would otherwise
// hold a thousand), and is guarded against SIGBUS (Note [Truncated while mapped]).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

namespace ferry::io {

class MappedFile {
 public:
  // Maps the whole of `path` and closes it again. Throws IoError (open, stat, mmap failures,
  // not a regular file) and CorruptFile for an empty file, which cannot be mapped and is never a
  // valid checkpoint.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_bytes_}; }
  std::uint64_t size_bytes() const noexcept { return size_bytes_; }
  // Writable address of the private (copy-on-write) mapping, for zero-copy tensors: writes
  // through it never reach the file.
  std::byte* mutable_data() const noexcept { return data_; }

  // Copies [offset, offset + dest.size()) of the file into `dest` with pread: faster than
  // faulting the mapping in when the bytes are to be copied anyway. The file is opened for the
  // call. Throws IoError, also when the path now names another file than the one mapped or the
  // file shrank.
  void read(std::uint64_t offset_bytes, std::span<std::byte> dest) const;

  // Asks the kernel to start reading [offset, offset + length) in the background. Best effort.
  void advise_willneed(std::uint64_t offset_bytes, std::uint64_t length_bytes) const noexcept;
  // Tells the kernel the range will be read once, front to back (larger readahead). Best effort.
  void advise_sequential(std::uint64_t offset_bytes, std::uint64_t length_bytes) const noexcept;

 private:
  MappedFile(std::filesystem::path path, std::byte* data, std::uint64_t size_bytes,
             std::uint64_t device, std::uint64_t inode);
  std::filesystem::path path_;
  std::filesystem::path absolute_path_;  // what read() reopens, whatever the working directory
  std::byte* data_;
  std::uint64_t size_bytes_;
  std::uint64_t device_;  // st_dev and st_ino of the mapped file
  std::uint64_t inode_;
  int region_slot_ = -1;  // in the SIGBUS handler's table
};

}  // namespace ferry::io
