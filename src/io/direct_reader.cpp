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
#include <unistd.h>
#include <unordered_map>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
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

// One file as the reader holds it. `fd` is the descriptor reads use now; it equals `direct_fd`
// while reads are direct. After a fallback the direct descriptor stays open until the OpenFile
// dies, because another thread may still be inside a pread on it. Readers hold a shared_ptr for
// the length of a read, so a file the cache evicts is closed only once no read uses it.
struct OpenFile {
  int direct_fd = -1;  // -1: never direct (Buffered mode, or O_DIRECT refused at open)
  std::atomic<int> fd{-1};
  std::list<std::string>::iterator lru;  // its place in Files::lru_ while cached

  OpenFile() = default;
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  ~OpenFile() {
    if (direct_fd >= 0) ::close(direct_fd);
    if (fd >= 0 && fd != direct_fd) ::close(fd);
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
    if (mode_ == ReadMode::Direct) {
      int err = 0;
      auto direct = try_open_regular_file(path, O_DIRECT, err);
      if (direct) file->direct_fd = direct->fd.release();
      if (!direct && err != EINVAL) throw os_error("open", path, err);
      if (!direct) log_fallback(path, "open");
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

std::byte* DirectReader::read(const FileExtent& e, std::byte* dst, std::size_t capacity) const {
  const bool direct_mode = mode_ == ReadMode::Direct;
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
  if (fd == file.direct_fd) {
    const std::uint64_t begin = align_down(e.offset);
    direct_got = pread_all(fd, /*direct=*/true, begin, align_up(e.offset + e.length) - begin, dst,
                           chunk, e.file);
    if (!direct_got) {
      files_->fall_back(file, e.file);
      fd = file.fd.load();
    }
  }
  if (direct_got) {
    got = std::min(*direct_got > delta ? *direct_got - delta : 0, e.length);
  } else {
    got = *pread_all(fd, /*direct=*/false, e.offset, e.length, tensor, chunk, e.file);
  }
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
