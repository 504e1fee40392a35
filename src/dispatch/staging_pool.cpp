#include "staging_pool.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/mman.h>

#include "ferry/core/error.h"

namespace ferry::dispatch {
namespace {
constexpr std::size_t kPage = 4096;
std::size_t round_up(std::size_t n) { return (n + kPage - 1) / kPage * kPage; }
}  // namespace

StagingPool::~StagingPool() { trim(); }

std::shared_ptr<StagingPool::Arena> StagingPool::acquire(std::size_t bytes, std::uint64_t limit) {
  const std::size_t size = round_up(std::max<std::size_t>(bytes, 1));
  std::byte* data = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (auto it = cache_.find(size); it != cache_.end()) {
      data = it->second;
      cache_.erase(it);
      cached_ -= size;
    } else {
      // Drop the largest cached arenas first until the new one fits beside the rest.
      while (!cache_.empty() && live_ + cached_ + size > limit) {
        auto last = std::prev(cache_.end());
        unmap(last->second, last->first);
        cached_ -= last->first;
        cache_.erase(last);
      }
    }
    live_ += size;
    peak_ = std::max(peak_, live_ + cached_);
  }
  if (data == nullptr) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      std::lock_guard lock(mutex_);
      live_ -= size;
      throw IoError(fmt::format("cannot allocate a staging buffer of {} bytes: {}", size,
                                std::strerror(err)));
    }
    data = static_cast<std::byte*>(p);
  }
  auto self = shared_from_this();
  return std::shared_ptr<Arena>(new Arena(data, size),
                                [self](Arena* arena) { self->give_back(arena); });
}

void StagingPool::give_back(Arena* arena) {
  {
    std::lock_guard lock(mutex_);
    live_ -= arena->size_;
    cached_ += arena->size_;
    cache_.emplace(arena->size_, arena->data_);
  }
  delete arena;
}

void StagingPool::trim() {
  std::lock_guard lock(mutex_);
  for (const auto& [size, data] : cache_) unmap(data, size);
  cache_.clear();
  cached_ = 0;
}

void StagingPool::unmap(std::byte* data, std::size_t size) noexcept { ::munmap(data, size); }

std::uint64_t StagingPool::live_bytes() const {
  std::lock_guard lock(mutex_);
  return live_;
}
std::uint64_t StagingPool::cached_bytes() const {
  std::lock_guard lock(mutex_);
  return cached_;
}
std::uint64_t StagingPool::peak_bytes() const {
  std::lock_guard lock(mutex_);
  return peak_;
}

}  // namespace ferry::dispatch
