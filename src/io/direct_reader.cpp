#include "ferry/io/direct_reader.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/core/memory.h"
#include "io/mapped_regions.h"
#include "io/regular_file.h"

namespace ferry::io {
namespace {

constexpr std::uint64_t kAlign = DirectReader::kAlignment;
constexpr std::size_t kDefaultChunkBytes = std::size_t{8} << 20;

std::uint64_t align_down(std::uint64_t x) { return x / kAlign * kAlign; }
std::uint64_t align_up(std::uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

IoError os_error(std::string_view what, const std::filesystem::path& file, int err) {
  return IoError(fmt::format("cannot {} {}: {}", what, file.string(), std::strerror(err)),
                 ErrorFields{.file = file.string(), .actual = std::strerror(err)});
}

int open_or_throw(const std::filesystem::path& file, int flags) {
  return open_regular_file(file, flags).fd.release();
}

// Reads [offset, offset + length) of `fd` into `dst`, at most `chunk` bytes per pread,
// continuing partial reads and retrying EINTR. Returns the bytes obtained: fewer than `length`
// only when the file ends first. nullopt when an O_DIRECT read fails with EINVAL (the file
// system does not do direct I/O: the caller falls back).
std::optional<std::uint64_t> pread_all(int fd, bool direct, std::uint64_t offset,
                                       std::uint64_t length, std::byte* dst, std::size_t chunk,
                                       const std::filesystem::path& file) {
  std::uint64_t done = 0;
  while (done < length) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(length - done, chunk));
    const ssize_t n = ::pread(fd, dst + done, want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && direct) return std::nullopt;
    if (n < 0) throw os_error("read", file, errno);
    if (n == 0) break;  // end of file
    done += static_cast<std::uint64_t>(n);
    // An O_DIRECT read comes back short and unaligned only at the end of the file. Stop there:
    // a further read would be a misaligned O_DIRECT read, which a file system may refuse with
    // EINVAL (and thus be taken for one that does no direct I/O) instead of returning 0.
    if (direct && static_cast<std::uint64_t>(n) % kAlign != 0) break;
  }
  return done;
}

// Note [Reading what the page cache holds]
// O_DIRECT keeps the promise of a memory budget: bytes streamed from disk do not also land in
// the page cache, where a memory cgroup charges them and reclaim may take mapped weights for
// them. But when the machine has free RAM and the checkpoint is already cached, O_DIRECT goes to
// the disk anyway on every forward while a copy from memory would do. Auto mode decides per
// read, at run time, from what the cache holds:
//
// - Each chunk of the read is mapped read-only (MAP_SHARED, no population) only to ask mincore()
//   which of its pages the page cache holds; the mapping is never touched. Resident runs are
//   copied with a buffered pread on a descriptor of their own, advised POSIX_FADV_RANDOM so that
//   it starts no readahead (not even the asynchronous one a readahead marker on a cached page
//   would start); the other runs are read with the O_DIRECT descriptor. Nothing is read into the
//   cache: in the cold/cgroup case mincore finds no page, every byte is read with O_DIRECT, and
//   the cache does not grow (a test checks this with mincore after the read).
// - The copy was first a memcpy out of the mapping. Each page copied then cost a page fault
//   (MADV_RANDOM, so no fault-around): 7 GB/s on one core here against 21 GB/s for pread, which
//   copies from the cache without touching page tables, and a page-cache-warm offloaded decode
//   ran slower than one reading everything with O_DIRECT.
// - Alignment: the read starts at floor(offset, 4096) as in Direct mode and runs are whole pages,
//   so each O_DIRECT read starts on a page and is a whole number of pages (the last one may come
//   back short at the end of the file, as in Direct mode). The buffer is laid out and sized
//   exactly as for Direct (reads_whole_pages) whichever way each page came. Copies from the
//   mapping stop at the file's size (fstat), so no page wholly past the end is touched.
// - preadv2(RWF_NOWAIT) on a buffered descriptor was the first design (one call that copies what
//   is cached and stops at the first page that is not), but on this kernel (6.18) a NOWAIT read
//   that meets an uncached page starts reading it (and its readahead window) into the cache
//   before it returns EAGAIN: `fincore` showed an evicted 8 MiB file with 1 MiB cached after one
//   failed 256 KiB NOWAIT read, and buffered reads of cached pages start asynchronous readahead
//   at the markers. Either would grow the cache in the cold/cgroup case, which is the promise.
// - A page evicted between mincore and the copy is read from storage into the cache (only that
//   page, since the descriptor does no readahead): a rare race that costs a page of cache, not a
//   wrong byte. Like the mapped CPU-resident weights, this assumes the checkpoint is not
//   truncated while it is read.
// - A file system without O_DIRECT falls back to buffered reads as in Direct mode (tmpfs:
//   memory either way).

// One file as the reader holds it. `fd` is the descriptor reads use now; it equals `direct_fd`
// while reads are direct. After a fallback the direct descriptor stays open until the OpenFile
// dies, because another thread may still be inside a pread on it. Readers hold a shared_ptr for
// the length of a read, so a file the cache evicts is closed only once no read uses it.
struct OpenFile {
  int direct_fd = -1;  // -1: never direct (Buffered mode, or O_DIRECT refused at open)
  int cache_fd = -1;   // Auto with direct_fd: buffered descriptor, mapped to ask mincore
  std::atomic<int> fd{-1};
  std::list<std::string>::iterator lru;  // its place in Files::lru_ while cached
  // Auto: the whole file, mapped once on first use (Note [Weights used in place]); null when
  // it could not be mapped.
  std::once_flag map_once;
  std::byte* map = nullptr;
  std::uint64_t map_bytes = 0;
  std::string map_path;  // named by the SIGBUS guard (Note [Truncated while mapped])
  int guard_slot = -1;
  // The mapping's pages handed out in place so far, each counted once as borrowed page cache
  // (Note [Page cache used in place], memory.cpp).
  std::mutex borrowed_mu;
  std::vector<bool> borrowed;
  std::uint64_t borrowed_bytes = 0;

  OpenFile() = default;
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  ~OpenFile() {
    if (map != nullptr) {
      unregister_mapping(guard_slot);
      if (borrowed_bytes > 0) {
        change_borrowed_pages(-static_cast<std::int64_t>(borrowed_bytes),
                              [this] { ::munmap(map, map_bytes); });
      } else {
        ::munmap(map, map_bytes);
      }
    }
    if (direct_fd >= 0) ::close(direct_fd);
    if (cache_fd >= 0) ::close(cache_fd);
    if (fd >= 0 && fd != direct_fd && fd != cache_fd) ::close(fd);
  }
};

}  // namespace

class DirectReader::Files {
 public:
  explicit Files(ReadMode mode) : mode_(mode) {}
  Files(const Files&) = delete;
  Files& operator=(const Files&) = delete;

  // The open file of `path`, opened on first use and kept among the kMaxOpenFiles most recently
  // used. Throws IoError.
  std::shared_ptr<OpenFile> get(const std::filesystem::path& path) {
    std::lock_guard lock(mutex_);
    const std::string key = path.string();
    if (auto it = open_.find(key); it != open_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second->lru);
      return it->second;
    }
    auto file = std::make_shared<OpenFile>();
    if (reads_whole_pages(mode_)) {
      int err = 0;
      auto direct = try_open_regular_file(path, O_DIRECT, err);
      if (direct) file->direct_fd = direct->fd.release();
      if (!direct && err != EINVAL) throw os_error("open", path, err);
      if (!direct) log_fallback(path, "open");
    }
    if (mode_ == ReadMode::Auto && file->direct_fd >= 0) {
      file->cache_fd = open_or_throw(path, 0);
      // Its reads copy pages the cache holds and must start no readahead (Note [Reading what
      // the page cache holds]).
      ::posix_fadvise(file->cache_fd, 0, 0, POSIX_FADV_RANDOM);
    }
    file->fd = file->direct_fd >= 0 ? file->direct_fd : open_or_throw(path, 0);
    // Note [Bounded descriptors]: a model of a thousand offloaded tensors in as many files
    // must not hold a thousand descriptors (ulimit -n is often 1024). The least recently used
    // file is closed; a later read opens it again.
    if (open_.size() >= kMaxOpenFiles) {
      open_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    file->lru = lru_.begin();
    open_.emplace(key, file);
    return file;
  }

  // Switches `file` to buffered reads after an O_DIRECT read failed with EINVAL. Idempotent:
  // of threads failing at once, the first switches and the others see its descriptor.
  void fall_back(OpenFile& file, const std::filesystem::path& path) {
    std::lock_guard lock(mutex_);
    if (file.fd != file.direct_fd) return;
    // A descriptor of its own: the cache descriptor is advised random (no readahead).
    file.fd = open_or_throw(path, 0);
    log_fallback(path, "read");
  }

  std::size_t open_files() {
    std::lock_guard lock(mutex_);
    return open_.size();
  }

  std::atomic<std::size_t> chunk_bytes{kDefaultChunkBytes};

 private:
  static void log_fallback(const std::filesystem::path& path, std::string_view call) {
    log_debug(
        "{}: the file system refuses O_DIRECT ({} failed with EINVAL); reading it through "
        "the page cache",
        path.string(), call);
  }

  ReadMode mode_;
  std::mutex mutex_;  // guards open_, lru_ and every OpenFile's switch to buffered reads
  std::unordered_map<std::string, std::shared_ptr<OpenFile>> open_;
  std::list<std::string> lru_;  // keys of open_, most recently used first
};

DirectReader::DirectReader(ReadMode mode) : mode_(mode), files_(std::make_unique<Files>(mode)) {}

DirectReader::~DirectReader() = default;

std::size_t DirectReader::staging_bytes(const FileExtent& e) const noexcept {
  if (mode_ == ReadMode::Buffered) return static_cast<std::size_t>(e.length);
  return static_cast<std::size_t>(align_up(e.offset + e.length) - align_down(e.offset));
}

namespace {

// A read-only mapping of part of a file, unmapped when it dies.
class Mapping {
 public:
  Mapping(int fd, std::uint64_t offset, std::size_t length) : length_(length) {
    void* p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
    if (p != MAP_FAILED) data_ = static_cast<const std::byte*>(p);
  }
  ~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), length_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const std::byte* data() const noexcept { return data_; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t length_;
};

// Auto mode: reads [begin, begin + length) (begin page-aligned, `dst` aligned) copying the pages
// the page cache holds and reading the others with O_DIRECT, one chunk at a time (Note [Reading
// what the page cache holds]). Returns the bytes obtained (fewer only when the file ends first),
// or nullopt when an O_DIRECT read fails with EINVAL (the caller falls back), as pread_all.
std::optional<std::uint64_t> read_auto(const OpenFile& file, std::uint64_t begin,
                                       std::uint64_t length, std::byte* dst, std::size_t chunk,
                                       const std::filesystem::path& path, ReadCounts& counts) {
  struct stat st {};
  if (::fstat(file.cache_fd, &st) != 0) throw os_error("stat", path, errno);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t available = size > begin ? std::min(length, size - begin) : 0;
  std::vector<unsigned char> resident;
  std::uint64_t done = 0;
  while (done < available) {
    const std::uint64_t span = std::min<std::uint64_t>(available - done, chunk);
    const std::size_t pages = static_cast<std::size_t>(align_up(span) / kAlign);
    const Mapping map(file.cache_fd, begin + done, pages * kAlign);
    resident.assign(pages, 0);
    if (map.data() != nullptr) {
      void* addr = const_cast<std::byte*>(map.data());
      // No answer (a mapping refused, mincore failing) reads every page with O_DIRECT.
      if (::mincore(addr, pages * kAlign, resident.data()) != 0) resident.assign(pages, 0);
    }
    for (std::size_t p = 0; p < pages;) {
      const bool cached = (resident[p] & 1u) != 0;
      std::size_t q = p + 1;
      while (q < pages && ((resident[q] & 1u) != 0) == cached) ++q;
      const std::uint64_t from = p * kAlign;
      const std::uint64_t to = std::min<std::uint64_t>(q * kAlign, span);
      if (cached) {
        const std::uint64_t got = *pread_all(file.cache_fd, /*direct=*/false, begin + done + from,
                                             to - from, dst + done + from, chunk, path);
        counts.page_cache_bytes += got;
        if (got < to - from) return done + from + got;  // the file shrank
      } else {
        const std::uint64_t want = (q - p) * kAlign;
        const std::optional<std::uint64_t> got =
            pread_all(file.direct_fd, /*direct=*/true, begin + done + from, want, dst + done + from,
                      chunk, path);
        if (!got) return std::nullopt;
        counts.direct_bytes += *got;
        if (*got < to - from) return done + from + *got;  // the file shrank
      }
      p = q;
    }
    done += span;
  }
  return done;
}

}  // namespace

// Note [Weights used in place]
// Copying what the page cache holds still costs a copy per forward. On a 2-core machine the
// copies of a page-cache-warm offloaded model (0.8 GB a token of a 1.15 GB model at 40 % in RAM)
// took the cores from the kernels: decode was 5-12x slower than with the model in RAM
// (bench/warm_offload.sh), slower even than O_DIRECT from an NVMe disk, which costs no CPU. So
// `--io auto`, the default (ReadMode::Auto with PrefetchOptions::in_place), does not read a
// tensor whose pages the page cache holds: resident() hands out its bytes in place, in a mapping
// of the whole file made once per open file, and a CPU block computes from them (no staging is
// allocated for such a tensor). `--io copy` copies them instead. Measured: 1.16x the all-in-RAM
// decode, against 5.3x copying.
// - The mapping's page tables persist from one forward to the next. Dropping them after each
//   block (MADV_DONTNEED, which keeps RSS to the running blocks) was tried: faulting 0.8 GB of
//   pages in again each token made decode 8.5x slower than in RAM, no better than copying.
// - So the pages used in place stay in the process's RSS, as file pages (RssFile), up to the
//   whole streamed part of the model. They are clean page cache that was there before ferry
//   mapped it (buffered reads would hold the same pages, just not in RSS), and the kernel
//   reclaims them under pressure like any other; a later forward then finds them gone and reads
//   them with O_DIRECT. They are counted as borrowed page cache when first handed out (populated
//   at once, usually by a loader thread) and taken out of the CPU's reported peak, which is checked
//   against the budget (Note [Page cache used in place], memory.cpp); the run reports them beside
//   it.
// - It is private and writable (MAP_PRIVATE, MAP_NORESERVE), as the mapped checkpoint is
//   (mapped_file.cpp): LibTorch has no read-only tensors, and a stray write must not reach the
//   file. It is advised MADV_RANDOM: a fault takes only its own page and starts no readahead.
// - Which tensors: those of which the page cache holds at least 90 % of the pages. Requiring
//   every page was tried first, but the kernel drops a few pages of a cached file now and then
//   (here a DAMON reclaim thread took ~30 pages of each 185 MiB shard); such a tensor was then
//   copied, its missing pages read with O_DIRECT, which does not cache them, so it stayed short
//   of a page for good: only 3.7 of 11 GB were used in place. A missing page of a tensor used in
//   place is read from storage when it is populated, one page (MADV_RANDOM), and joins the cache.
// - A file truncated since it was mapped is not used in place where the tensor reaches past its
//   new end (fstat on each hand-out): those pages of the mapping would fault with SIGBUS. The
//   read that follows names the truncation. A file truncated while its bytes are in use is the
//   mapped checkpoint's case: the mapping is registered with the SIGBUS guard, which exits
//   naming the file (Note [Truncated while mapped], mapped_regions.h).
// - The RAM-limited case keeps its promise: with a cold cache in a cgroup mincore finds no page,
//   no tensor qualifies, and every byte is read with O_DIRECT.
namespace {

// A tensor is used in place when at most 1/kInPlaceMissingDivisor of its pages are not cached.
constexpr std::size_t kInPlaceMissingDivisor = 10;

std::byte* whole_mapping(OpenFile& file, const std::filesystem::path& path) {
  std::call_once(file.map_once, [&file, &path] {
    struct stat st {};
    if (file.cache_fd < 0 || ::fstat(file.cache_fd, &st) != 0 || st.st_size <= 0) return;
    const auto size = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
                     file.cache_fd, 0);
    if (p == MAP_FAILED) return;
    ::madvise(p, size, MADV_RANDOM);
    file.map = static_cast<std::byte*>(p);
    file.map_bytes = size;
    // A page of it read after the file was truncated under ferry: a clear exit naming the file,
    // not a silent death (Note [Truncated while mapped]).
    file.map_path = path.string();
    file.guard_slot = register_mapping(p, size, file.map_path.c_str());
    file.borrowed.assign(static_cast<std::size_t>(align_up(size) / kAlign), false);
  });
  return file.map;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

// Maps [begin, end) of the file's mapping into the page tables now, counting the pages not yet
// counted as borrowed page cache (Note [Page cache used in place]). Populating here, before the
// count changes, keeps the count exact, and on a loader thread (a block's first load) takes the
// faults off the compute threads. A missing page (at most a tenth) is read from storage into the
// cache.
void borrow(OpenFile& file, std::uint64_t begin, std::uint64_t end) {
  // resident() checked that the extent lies within the mapping, so [begin, end) covers pages of
  // the file only, each with a bit.
  std::lock_guard lock(file.borrowed_mu);
  const auto first = file.borrowed.begin() + static_cast<std::ptrdiff_t>(begin / kAlign);
  const auto last = file.borrowed.begin() + static_cast<std::ptrdiff_t>(end / kAlign);
  const auto fresh = static_cast<std::uint64_t>(std::count(first, last, false));
  if (fresh == 0) return;
  std::byte* const at = file.map + begin;
  const std::size_t length = static_cast<std::size_t>(end - begin);
  change_borrowed_pages(static_cast<std::int64_t>(fresh * kAlign), [&] {
    if (::madvise(at, length, MADV_POPULATE_READ) != 0 && errno == EINVAL) {
      // A kernel before 5.14: touch each page (a read, so no copy). Another error (a page that
      // cannot be read) is left alone: the compute faults that page in as it would have anyway.
      for (std::size_t off = 0; off < length; off += kAlign) {
        (void)*static_cast<volatile const std::byte*>(at + off);
      }
    }
  });
  std::fill(first, last, true);
  file.borrowed_bytes += fresh * kAlign;
}

}  // namespace

std::shared_ptr<std::byte> DirectReader::resident(const FileExtent& e, ReadCounts* counts) const {
  if (mode_ != ReadMode::Auto || e.length == 0) return nullptr;
  std::shared_ptr<OpenFile> held = files_->get(e.file);
  OpenFile& file = *held;
  if (file.cache_fd < 0 || file.fd.load() != file.direct_fd) return nullptr;
  std::byte* const map = whole_mapping(file, e.file);
  // A file shorter than the extent is read(), which names the truncation. Its size now, not when
  // it was mapped: a page of the mapping past the end of a file truncated since would fault with
  // SIGBUS.
  struct stat st {};
  if (map == nullptr || e.offset + e.length > file.map_bytes || ::fstat(file.cache_fd, &st) != 0 ||
      e.offset + e.length > static_cast<std::uint64_t>(st.st_size)) {
    return nullptr;
  }
  const std::uint64_t begin = align_down(e.offset);
  const std::uint64_t end = align_up(e.offset + e.length);
  std::vector<unsigned char> pages(static_cast<std::size_t>((end - begin) / kAlign));
  if (::mincore(map + begin, static_cast<std::size_t>(end - begin), pages.data()) != 0) {
    return nullptr;
  }
  std::size_t missing = 0;
  for (const unsigned char page : pages) missing += (page & 1u) == 0 ? 1 : 0;
  if (missing * kInPlaceMissingDivisor > pages.size()) return nullptr;
  borrow(file, begin, end);
  if (counts != nullptr) counts->in_place_bytes += e.length;
  // Aliasing: the bytes keep the open file, and so its mapping, alive.
  return std::shared_ptr<std::byte>(std::move(held), map + e.offset);
}

std::byte* DirectReader::read(const FileExtent& e, std::byte* dst, std::size_t capacity,
                              ReadCounts* counts) const {
  const bool direct_mode = reads_whole_pages(mode_);
  FERRY_CHECK(capacity >= staging_bytes(e), InvalidArgument,
              "cannot read {} bytes at offset {} of {}: the buffer holds {} bytes, expected at "
              "least {}",
              e.length, e.offset, e.file.string(), capacity, staging_bytes(e));
  FERRY_CHECK(!direct_mode || reinterpret_cast<std::uintptr_t>(dst) % kAlign == 0, InvalidArgument,
              "cannot read {} bytes at offset {} of {}: the buffer at {} is not aligned to {} "
              "bytes, as O_DIRECT needs",
              e.length, e.offset, e.file.string(), static_cast<const void*>(dst), kAlign);
  // The tensor sits at the same place inside the buffer whether or not the file fell back, so
  // callers see one layout per mode.
  const std::uint64_t delta = direct_mode ? e.offset % kAlign : 0;
  std::byte* const tensor = dst + delta;
  const std::shared_ptr<OpenFile> held = files_->get(e.file);
  OpenFile& file = *held;
  if (e.length == 0) return tensor;
  const std::size_t chunk = files_->chunk_bytes.load(std::memory_order_relaxed);

  std::uint64_t got = 0;  // bytes of the tensor obtained
  int fd = file.fd.load();
  std::optional<std::uint64_t> direct_got;
  ReadCounts here;
  if (fd == file.direct_fd) {
    const std::uint64_t begin = align_down(e.offset);
    const std::uint64_t length = align_up(e.offset + e.length) - begin;
    if (file.cache_fd >= 0) {
      direct_got = read_auto(file, begin, length, dst, chunk, e.file, here);
    } else {
      direct_got = pread_all(fd, /*direct=*/true, begin, length, dst, chunk, e.file);
      if (direct_got) here.direct_bytes += *direct_got;
    }
    if (!direct_got) {
      here = {};
      files_->fall_back(file, e.file);
      fd = file.fd.load();
    }
  }
  if (direct_got) {
    got = std::min(*direct_got > delta ? *direct_got - delta : 0, e.length);
  } else {
    got = *pread_all(fd, /*direct=*/false, e.offset, e.length, tensor, chunk, e.file);
    here.buffered_bytes += got;
  }
  if (counts != nullptr) *counts += here;
  if (got < e.length) {
    throw CorruptFile(
        fmt::format("{} ends before the bytes it should hold: expected {} bytes at offset {}, "
                    "got {} (was the file truncated?)",
                    e.file.string(), e.length, e.offset, got),
        ErrorFields{.file = e.file.string(),
                    .expected = std::to_string(e.length),
                    .actual = std::to_string(got)});
  }
  return tensor;
}

bool DirectReader::is_direct(const std::filesystem::path& file) const {
  const std::shared_ptr<OpenFile> f = files_->get(file);
  return f->fd.load() == f->direct_fd;
}

std::size_t DirectReader::open_files() const { return files_->open_files(); }

void DirectReader::set_chunk_bytes(std::size_t bytes) {
  FERRY_CHECK(bytes > 0, InvalidArgument, "chunk size must be positive: expected > 0, got 0");
  files_->chunk_bytes.store(static_cast<std::size_t>(align_up(bytes)));
}

std::size_t DirectReader::chunk_bytes() const noexcept { return files_->chunk_bytes.load(); }

}  // namespace ferry::io
