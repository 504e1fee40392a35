#pragma once
// Positioned reads of stored tensors into the caller's own (reusable, aligned) buffers, with
// O_DIRECT where the file system allows: what a prefetcher uses instead of the mapping, so that
// bytes read once are not also kept in the page cache. In Auto mode bytes the page cache already
// holds are copied from it and only the rest is read with O_DIRECT.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "ferry/io/file_extent.h"

namespace ferry::io {

enum class ReadMode {
  Direct,    // O_DIRECT, falling back to buffered reads per file where the file system refuses it
  Buffered,  // ordinary reads through the page cache
  // Per read: the pages the page cache holds (mincore) are copied from it without I/O, the rest
  // are read with O_DIRECT (Note [Reading what the page cache holds]); falls back as Direct.
  Auto,
};

// Whether reads in `mode` may use O_DIRECT, so that buffers must be page-aligned and sized to
// whole pages (staging_bytes): true for Direct and Auto. Planners size staging by this.
constexpr bool reads_whole_pages(ReadMode mode) noexcept { return mode != ReadMode::Buffered; }

// Where the bytes of reads came from, in file bytes (page padding included), summed over reads.
struct ReadCounts {
  std::uint64_t page_cache_bytes = 0;  // copied from the page cache without I/O (Auto)
  std::uint64_t direct_bytes = 0;      // read from storage with O_DIRECT (Direct, Auto)
  std::uint64_t buffered_bytes = 0;    // blocking buffered reads (Buffered mode, fallbacks)
  std::uint64_t in_place_bytes = 0;    // tensor bytes used in place, not read (resident())

  ReadCounts& operator+=(const ReadCounts& o) noexcept {
    in_place_bytes += o.in_place_bytes;
    page_cache_bytes += o.page_cache_bytes;
    direct_bytes += o.direct_bytes;
    buffered_bytes += o.buffered_bytes;
    return *this;
  }
};

// Reads FileExtents with pread. Files are opened on first use and the kMaxOpenFiles most
// recently used are kept open (a file read again after that is reopened), so a reader holds a
// bounded number of descriptors however many files it reads. Only regular files are read
// (IoError otherwise). read(), staging_bytes() and is_direct() may be called from several
// threads at once; set_chunk_bytes() too, though a read already running keeps the chunk size
// it started with.
class DirectReader {
 public:
  static constexpr std::size_t kAlignment = 4096;
  // Files kept open at once (each holds at most two descriptors: O_DIRECT and buffered).
  static constexpr std::size_t kMaxOpenFiles = 64;

  explicit DirectReader(ReadMode mode = ReadMode::Direct);
  ~DirectReader();  // closes its descriptors
  DirectReader(const DirectReader&) = delete;
  DirectReader& operator=(const DirectReader&) = delete;

  ReadMode mode() const noexcept { return mode_; }

  // Capacity a destination buffer needs to read `e`: with Direct and Auto, the aligned superset
  // [floor(offset, 4096), ceil(offset + length, 4096)); with Buffered, e.length.
  std::size_t staging_bytes(const FileExtent& e) const noexcept;

  // Reads e's bytes into `dst` and returns a pointer to the tensor's first byte inside it:
  // dst + offset % 4096 with Direct and Auto (also for a file that fell back to buffered reads),
  // dst with Buffered. With Direct and Auto, `dst` must be aligned to kAlignment; `capacity`
  // must be at least staging_bytes(e) (InvalidArgument otherwise). Requests larger than the
  // chunk size are issued as several reads. Adds where the bytes came from to `*counts` when
  // given. Throws IoError (cannot open or read: names the file and the OS's reason)
  // and CorruptFile when the file ends before the extent does (names the file, the offset and
  // the expected and actual byte counts).
  std::byte* read(const FileExtent& e, std::byte* dst, std::size_t capacity,
                  ReadCounts* counts = nullptr) const;

  // Auto mode: e's bytes in place, in a private mapping of the whole file kept while the file is
  // open, when the page cache holds at least 90 % of their pages (mincore; a missing page is
  // faulted in from storage when used, and joins the cache). The pointer keeps the mapping
  // alive; the pages it touches stay in this process's RSS as file pages. nullptr when more
  // pages are missing, in the other modes, for a file that fell back to buffered reads or that
  // ends before the extent (read() it then). Adds e.length to counts->in_place_bytes when it
  // answers (Note [Weights used in place] in direct_reader.cpp). Throws IoError when the file
  // cannot be opened.
  std::shared_ptr<std::byte> resident(const FileExtent& e, ReadCounts* counts = nullptr) const;

  // Whether reads of `file` may use O_DIRECT: false in Buffered mode and after a fallback. Opens
  // the file when it is not open yet (IoError if it cannot be).
  bool is_direct(const std::filesystem::path& file) const;

  // Files open now: at most kMaxOpenFiles.
  std::size_t open_files() const;

  // Largest single read (default 8 MiB), rounded up to a multiple of kAlignment.
  void set_chunk_bytes(std::size_t bytes);
  std::size_t chunk_bytes() const noexcept;

 private:
  class Files;

  ReadMode mode_;
  std::unique_ptr<Files> files_;  // the fd cache and the chunk size
};

}  // namespace ferry::io
