// ReadMode::Auto (Note [Reading what the page cache holds]): bytes the page cache holds are
// copied from it, the rest read with O_DIRECT, and the bytes equal the file's whatever mix of
// the two a read takes. A cold read must not grow the page cache: that is the memory promise.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <new>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/io/direct_reader.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::ScratchDir;

constexpr std::size_t kAlign = DirectReader::kAlignment;
// Not a multiple of a page, so the last O_DIRECT read is short.
constexpr std::size_t kFileBytes = (std::size_t{3} << 20) + 1234;

// A file of kFileBytes bytes that differ from page to page and within each page.
std::filesystem::path write_pattern(const ScratchDir& dir) {
  std::string bytes(kFileBytes, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<char>((i * 2654435761u) >> 13);
  }
  const auto path = dir / "pattern.bin";
  testing::write_file(path, bytes);
  return path;
}

class Fd {
 public:
  explicit Fd(const std::filesystem::path& p) : fd_(::open(p.c_str(), O_RDONLY)) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Pages of [offset, offset + length) of `file` in the page cache, asked of mincore.
std::size_t resident_pages(const std::filesystem::path& file, std::size_t offset = 0,
                           std::size_t length = kFileBytes) {
  const Fd fd(file);
  void* map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd.get(), static_cast<off_t>(offset));
  if (map == MAP_FAILED) return 0;
  std::vector<unsigned char> vec((length + kAlign - 1) / kAlign);
  const int rc = ::mincore(map, length, vec.data());
  ::munmap(map, length);
  if (rc != 0) return 0;
  std::size_t n = 0;
  for (const unsigned char v : vec) n += v & 1u;
  return n;
}

// Drops the file's pages from the page cache (written back first).
void evict(const std::filesystem::path& file) {
  const Fd fd(file);
  ::fsync(fd.get());
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
}

// Reads [offset, offset + length) through the page cache without readahead, caching exactly
// those pages.
void warm(const std::filesystem::path& file, std::size_t offset, std::size_t length) {
  const Fd fd(file);
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
  std::string buf(kAlign, '\0');
  for (std::size_t at = offset; at < offset + length; at += kAlign) {
    ASSERT_GE(::pread(fd.get(), buf.data(), kAlign, static_cast<off_t>(at)), 0);
  }
}

bool does_o_direct(const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) return false;
  void* page = ::operator new (kAlign, std::align_val_t{kAlign});
  const bool ok = ::pread(fd, page, kAlign, 0) >= 0;
  ::operator delete (page, std::align_val_t{kAlign});
  ::close(fd);
  return ok;
}

struct Read {
  std::string bytes;
  ReadCounts counts;
};

Read read_auto(const DirectReader& reader, const FileExtent& e) {
  const std::size_t capacity = reader.staging_bytes(e);
  auto* buffer = static_cast<std::byte*>(::operator new (capacity, std::align_val_t{kAlign}));
  Read r;
  const std::byte* tensor = reader.read(e, buffer, capacity, &r.counts);
  EXPECT_EQ(tensor, buffer + e.offset % kAlign);
  r.bytes.assign(reinterpret_cast<const char*>(tensor), e.length);
  ::operator delete (buffer, std::align_val_t{kAlign});
  return r;
}

// Extents at unaligned offsets and lengths: inside one page, across many, to the file's end.
std::vector<FileExtent> extents(const std::filesystem::path& file) {
  return {{.file = file, .offset = 1000, .length = (std::size_t{2} << 20) + 77},
          {.file = file, .offset = 5, .length = 10},
          {.file = file, .offset = 3 * kAlign, .length = kAlign},
          {.file = file, .offset = kFileBytes - 70'001, .length = 70'001}};
}

// The file bytes a read of `e` covers: its aligned superset, cut at the end of the file.
std::uint64_t covered(const FileExtent& e) {
  const std::uint64_t begin = e.offset / kAlign * kAlign;
  const std::uint64_t end =
      std::min<std::uint64_t>((e.offset + e.length + kAlign - 1) / kAlign * kAlign, kFileBytes);
  return end - begin;
}

class AutoRead : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = write_pattern(dir_);
    if (!does_o_direct(path_)) GTEST_SKIP() << dir_.path() << " does not do O_DIRECT";
    contents_ = testing::read_file(path_);
    reader_.set_chunk_bytes(64 * kAlign);  // many chunks per read
  }
  std::string expected(const FileExtent& e) const { return contents_.substr(e.offset, e.length); }

  ScratchDir dir_;
  std::filesystem::path path_;
  std::string contents_;
  DirectReader reader_{ReadMode::Auto};
};

TEST_F(AutoRead, CachedFileIsServedFromThePageCache) {
  warm(path_, 0, kFileBytes);
  ASSERT_EQ(resident_pages(path_), (kFileBytes + kAlign - 1) / kAlign);
  for (const FileExtent& e : extents(path_)) {
    SCOPED_TRACE(fmt::format("{} bytes at {}", e.length, e.offset));
    const Read r = read_auto(reader_, e);
    EXPECT_EQ(r.bytes, expected(e));
    EXPECT_EQ(r.counts.page_cache_bytes, covered(e));
    EXPECT_EQ(r.counts.direct_bytes, 0u);
    EXPECT_EQ(r.counts.buffered_bytes, 0u);
  }
  EXPECT_TRUE(reader_.is_direct(path_));
}

TEST_F(AutoRead, EvictedFileIsReadWithODirectAndStaysOutOfTheCache) {
  evict(path_);
  ASSERT_EQ(resident_pages(path_), 0u) << "posix_fadvise(DONTNEED) kept pages";
  for (const FileExtent& e : extents(path_)) {
    SCOPED_TRACE(fmt::format("{} bytes at {}", e.length, e.offset));
    const Read r = read_auto(reader_, e);
    EXPECT_EQ(r.bytes, expected(e));
    EXPECT_EQ(r.counts.page_cache_bytes, 0u);
    EXPECT_EQ(r.counts.direct_bytes, covered(e));
  }
  // The promise of the cold case: reading did not put the file in the page cache.
  EXPECT_EQ(resident_pages(path_), 0u);
}

TEST_F(AutoRead, HalfCachedFileTakesEachPartFromWhereItIs) {
  evict(path_);
  ASSERT_EQ(resident_pages(path_), 0u);
  // Cached runs with holes: the first MiB and the third.
  warm(path_, 0, std::size_t{1} << 20);
  warm(path_, std::size_t{2} << 20, std::size_t{1} << 20);
  const std::size_t cached_pages = resident_pages(path_);
  ASSERT_EQ(cached_pages, 2 * (std::size_t{1} << 20) / kAlign);
  const FileExtent whole{.file = path_, .offset = 3, .length = kFileBytes - 3};
  const Read r = read_auto(reader_, whole);
  EXPECT_EQ(r.bytes, expected(whole));
  EXPECT_EQ(r.counts.page_cache_bytes, cached_pages * kAlign);
  EXPECT_EQ(r.counts.page_cache_bytes + r.counts.direct_bytes, kFileBytes);
  // The direct part was not cached (it would add 384 pages). At most as many as before, not
  // exactly: this VM's DAMON reclaim may take a page or two meanwhile (seen under ASan).
  EXPECT_LE(resident_pages(path_), cached_pages);
  // A read starting inside the cold hole, ending in the cached run after it.
  const FileExtent across{
      .file = path_, .offset = (std::size_t{3} << 19) + 11, .length = std::size_t{1} << 20};
  const Read a = read_auto(reader_, across);
  EXPECT_EQ(a.bytes, expected(across));
  EXPECT_GT(a.counts.page_cache_bytes, 0u);
  EXPECT_GT(a.counts.direct_bytes, 0u);
}

// A read whose first page is cached and the rest not, starting inside that page.
TEST_F(AutoRead, CachedFirstPageThenColdPages) {
  evict(path_);
  warm(path_, 0, 5 * kAlign);
  ASSERT_EQ(resident_pages(path_), 5u);
  const FileExtent e{.file = path_, .offset = 4 * kAlign + 100, .length = 3 * kAlign};
  const Read r = read_auto(reader_, e);
  EXPECT_EQ(r.bytes, expected(e));
  EXPECT_EQ(r.counts.page_cache_bytes, kAlign);
  EXPECT_EQ(r.counts.direct_bytes, 3 * kAlign);
}

// Note [Weights used in place]: a wholly cached extent is handed out in place, without a read.
TEST_F(AutoRead, AWhollyCachedExtentIsUsedInPlace) {
  warm(path_, 0, kFileBytes);
  std::shared_ptr<std::byte> kept;
  FileExtent kept_extent;
  {
    const DirectReader reader(ReadMode::Auto);
    for (const FileExtent& e : extents(path_)) {
      SCOPED_TRACE(fmt::format("{} bytes at {}", e.length, e.offset));
      ReadCounts counts;
      const std::shared_ptr<std::byte> bytes = reader.resident(e, &counts);
      ASSERT_NE(bytes, nullptr);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.get()), e.length), expected(e));
      EXPECT_EQ(counts.in_place_bytes, e.length);
      EXPECT_EQ(counts.page_cache_bytes + counts.direct_bytes + counts.buffered_bytes, 0U);
      kept = bytes;
      kept_extent = e;
    }
  }
  // The bytes outlive the reader, and a write to them never reaches the file.
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(kept.get()), kept_extent.length),
            expected(kept_extent));
  kept.get()[0] =
      static_cast<std::byte>(~static_cast<unsigned char>(contents_[kept_extent.offset]));
  EXPECT_EQ(testing::read_file(path_), contents_);
  // Other modes never hand bytes out in place.
  EXPECT_EQ(DirectReader(ReadMode::Direct).resident(extents(path_).front()), nullptr);
  EXPECT_EQ(DirectReader(ReadMode::Buffered).resident(extents(path_).front()), nullptr);
}

// A file truncated since it was mapped: a page of the mapping wholly past its new end would fault
// with SIGBUS, so an extent reaching there is not handed out in place (though the cache lacks
// only one of its 64 pages) but read, which names the truncation.
TEST_F(AutoRead, AFileTruncatedSinceMappedIsNotUsedInPlace) {
  warm(path_, 0, kFileBytes);
  const DirectReader reader(ReadMode::Auto);
  const std::size_t end = kFileBytes / kAlign * kAlign;
  const FileExtent e{.file = path_, .offset = end - 64 * kAlign, .length = 64 * kAlign};
  ASSERT_NE(reader.resident(e), nullptr);  // mapped, whole
  std::filesystem::resize_file(path_, e.offset + e.length - kAlign - 100);
  warm(path_, 0, e.offset + e.length - kAlign - 100);
  EXPECT_EQ(reader.resident(e), nullptr);
  std::vector<std::byte> buffer(reader.staging_bytes(e) + kAlign);
  std::byte* aligned = reinterpret_cast<std::byte*>(
      (reinterpret_cast<std::uintptr_t>(buffer.data()) + kAlign - 1) / kAlign * kAlign);
  EXPECT_THROW(reader.read(e, aligned, reader.staging_bytes(e)), CorruptFile);
}

// Note [Truncated while mapped]: bytes already handed out in place whose file is truncated under
// ferry end the process with a message naming the file, not a silent SIGBUS.
TEST_F(AutoRead, BytesUsedInPlaceOfAFileTruncatedLaterExitNamingTheFile) {
  warm(path_, 0, kFileBytes);
  const std::size_t end = kFileBytes / kAlign * kAlign;
  const FileExtent e{.file = path_, .offset = end - 64 * kAlign, .length = 64 * kAlign};
  const auto use_after_truncation = [&] {
    const DirectReader reader(ReadMode::Auto);
    const std::shared_ptr<std::byte> bytes = reader.resident(e);
    if (!bytes) std::_Exit(3);
    std::filesystem::resize_file(path_, kAlign);
    volatile std::byte last = bytes.get()[e.length - 1];
    (void)last;
    std::_Exit(0);
  };
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(use_after_truncation(), ::testing::ExitedWithCode(135),
              "changed or was truncated while mapped \\(SIGBUS at offset");
}

// An extent of which the cache lacks more than a tenth of the pages is not handed out in place,
// and asking caches nothing; one that lacks a page or two is, its missing pages faulted in when
// used, with the right bytes.
TEST_F(AutoRead, AnExtentMostlyUncachedIsReadNotUsedInPlace) {
  evict(path_);
  ASSERT_EQ(resident_pages(path_), 0u);
  warm(path_, 0, std::size_t{1} << 20);  // the first MiB only
  const std::size_t cached = resident_pages(path_);
  const FileExtent inside{.file = path_, .offset = 100, .length = 200'000};
  const FileExtent half{
      .file = path_, .offset = std::size_t{1} << 19, .length = std::size_t{1} << 20};
  const FileExtent outside{.file = path_, .offset = std::size_t{2} << 20, .length = 10'000};
  EXPECT_NE(reader_.resident(inside), nullptr);
  EXPECT_EQ(reader_.resident(half), nullptr);
  EXPECT_EQ(reader_.resident(outside), nullptr);
  EXPECT_EQ(resident_pages(path_), cached);
  // 256 cached pages and one more, not cached: used in place.
  const FileExtent one_short{.file = path_, .offset = 100, .length = (std::size_t{1} << 20) + 10};
  const std::shared_ptr<std::byte> bytes = reader_.resident(one_short);
  ASSERT_NE(bytes, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.get()), one_short.length),
            expected(one_short));
  EXPECT_EQ(resident_pages(path_), cached + 1);  // the missing page, faulted in
  // Past the end of the file: read() names the truncation.
  EXPECT_EQ(reader_.resident({.file = path_, .offset = kFileBytes - 10, .length = 20}), nullptr);
}

// tmpfs (no O_DIRECT before Linux 6.6, and RWF_NOWAIT only on some kernels): the bytes are right
// whichever way they come.
TEST(AutoReadShm, ReadsFromShm) {
  const std::filesystem::path shm = "/dev/shm";
  if (!std::filesystem::is_directory(shm)) GTEST_SKIP() << "no /dev/shm";
  const auto path = shm / fmt::format("ferry_auto_{}.bin", ::getpid());
  std::string bytes(kFileBytes, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 31 + i / 4096);
  testing::write_file(path, bytes);
  struct Remove {
    std::filesystem::path p;
    ~Remove() { std::filesystem::remove(p); }
  } remove{path};
  const DirectReader reader(ReadMode::Auto);
  for (const FileExtent& e : extents(path)) {
    const Read r = read_auto(reader, e);
    EXPECT_EQ(r.bytes, bytes.substr(e.offset, e.length)) << e.offset;
    EXPECT_EQ(r.counts.page_cache_bytes + r.counts.direct_bytes + r.counts.buffered_bytes,
              reader.is_direct(path) ? covered(e) : e.length);
  }
}

}  // namespace
}  // namespace ferry::io
