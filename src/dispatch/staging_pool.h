#pragma once
// A pool of page-aligned host buffers ("arenas") for staging weights. An arena goes back to the
// pool when the last reference to it dies (tensors made over it hold one), so a buffer is never
// reused while a tensor still reads it. Freed arenas are cached for reuse by size (the blocks of
// a model repeat their sizes layer after layer); the cache is trimmed to stay within a limit.
// Arenas are anonymous mappings: memory given back is given back to the operating system.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

namespace ferry::dispatch {

class StagingPool : public std::enable_shared_from_this<StagingPool> {
 public:
  class Arena {
   public:
    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }

   private:
    friend class StagingPool;
    Arena(std::byte* data, std::size_t size) : data_(data), size_(size) {}
    std::byte* data_;
    std::size_t size_;
  };

  static std::shared_ptr<StagingPool> create() {
    return std::shared_ptr<StagingPool>(new StagingPool());
  }
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // An arena of at least `bytes` (rounded up to pages): a cached one of that size, or a new one
  // after dropping cached arenas until live + cached + new fits `limit` where it can. Throws
  // IoError when the system refuses the memory.
  std::shared_ptr<Arena> acquire(std::size_t bytes, std::uint64_t limit);
  // Frees every cached arena.
  void trim();

  std::uint64_t live_bytes() const;
  std::uint64_t cached_bytes() const;
  std::uint64_t peak_bytes() const;  // highest live + cached

 private:
  StagingPool() = default;
  void give_back(Arena* arena);
  static void unmap(std::byte* data, std::size_t size) noexcept;

  mutable std::mutex mutex_;
  std::multimap<std::size_t, std::byte*> cache_;
  std::uint64_t live_ = 0;
  std::uint64_t cached_ = 0;
  std::uint64_t peak_ = 0;
};

}  // namespace ferry::dispatch
