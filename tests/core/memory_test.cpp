#include "ferry/core/memory.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <filesystem>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "ferry/core/error.h"

namespace ferry {
namespace {

TEST(Memory, ParsesMemAvailable) {
  const std::string text =
      "MemTotal:       24589360 kB\nMemFree:        23000000 kB\nMemAvailable:   "
      "22000000 kB\nBuffers:           1000 kB\n";
  EXPECT_EQ(parse_meminfo_available(text).value(), 22000000ULL * 1024);
}

TEST(Memory, MissingOrMalformedMemAvailableIsCorruptFile) {
  EXPECT_THROW(parse_meminfo_available("MemTotal: 5 kB\n", "meminfo"), CorruptFile);
  try {
    parse_meminfo_available("MemAvailable: lots kB\n", "meminfo");
    FAIL();
  } catch (const CorruptFile& e) {
    EXPECT_EQ(e.file(), "meminfo");
    EXPECT_NE(std::string(e.what()).find("MemAvailable"), std::string::npos);
  }
  // A key that merely starts the same way is not the field.
  EXPECT_THROW(parse_meminfo_available("MemAvailableX: 5 kB\n"), CorruptFile);
}

TEST(Memory, ProbesThisMachine) {
  EXPECT_GT(available_ram().value(), 0U);
  EXPECT_GT(current_rss().value(), 0U);
  EXPECT_GE(peak_rss(), current_rss());
  // Without CUDA (or without GPUs) probing reports zero GPUs without error.
  const auto gpus = probe_gpus();
  for (const auto& g : gpus) EXPECT_LE(g.free, g.total);
}

// Note [Page cache used in place]: pages of a cached file mapped through change_borrowed_pages()
// raise the RSS and the kernel's peak, not the owned peak; memory the process allocates raises
// both; unmapping them gives the count back.
TEST(Memory, BorrowedPageCacheIsNotInTheOwnedPeak) {
  constexpr std::size_t kFile = std::size_t{96} << 20;
  // The allocator and test framework; under ASan also the shadow of the mappings (1/8 of them).
  constexpr std::uint64_t kSlack = std::uint64_t{32} << 20;
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / fmt::format("ferry-borrowed-{}", ::getpid());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  {
    const std::vector<char> chunk(std::size_t{1} << 20, 'x');
    for (std::size_t done = 0; done < kFile; done += chunk.size()) {
      ASSERT_EQ(::write(fd, chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
    }
  }
  void* map = ::mmap(nullptr, kFile, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  std::filesystem::remove(path);  // the mapping keeps the pages
  ASSERT_NE(map, MAP_FAILED);

  const std::uint64_t borrowed_before = borrowed_pages().value();
  const std::uint64_t owned_before = owned_peak_rss().value();
  const std::uint64_t rss_before = current_rss().value();
  change_borrowed_pages(static_cast<std::int64_t>(kFile), [&] {
    for (std::size_t off = 0; off < kFile; off += 4096) {
      (void)*static_cast<volatile const char*>(static_cast<char*>(map) + off);
    }
  });
  EXPECT_EQ(borrowed_pages().value(), borrowed_before + kFile);
  EXPECT_GE(current_rss().value() + kSlack, rss_before + kFile);  // the pages are in RSS...
  EXPECT_GE(peak_rss().value() + kSlack, rss_before + kFile);
  EXPECT_LE(owned_peak_rss().value(), owned_before + kSlack);  // ...not in the owned peak

  // Memory of the process's own is in it (mapped directly: a sanitizer's allocator keeps freed
  // blocks resident).
  constexpr std::size_t kOwn = std::size_t{48} << 20;
  void* own_map = ::mmap(nullptr, kOwn, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(own_map, MAP_FAILED);
  char* own = static_cast<char*>(own_map);
  for (std::size_t off = 0; off < kOwn; off += 4096) own[off] = 1;
  EXPECT_GE(owned_peak_rss().value() + kSlack, rss_before + kOwn);
  EXPECT_LE(owned_peak_rss().value(), std::max(owned_before, rss_before + kOwn) + kSlack);
  ::munmap(own_map, kOwn);

  change_borrowed_pages(-static_cast<std::int64_t>(kFile), [&] { ::munmap(map, kFile); });
  EXPECT_EQ(borrowed_pages().value(), borrowed_before);
  EXPECT_LE(current_rss().value(), rss_before + kSlack);
  // The peak owned stays what it was: unmapping borrowed pages does not count as owning them.
  EXPECT_LE(owned_peak_rss().value(), std::max(owned_before, rss_before + kOwn) + kSlack);
}

}  // namespace
}  // namespace ferry
