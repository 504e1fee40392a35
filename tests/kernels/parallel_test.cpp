#include "ferry/kernels/parallel.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "test_util.h"

namespace ferry::kernels {
namespace {

using testing::ThreadCount;

// The regression this guards: built without OpenMP, every kernel ran on one thread.
TEST(KernelThreads, UseTheThreadsLibTorchIsSetTo) {
  for (int threads : {1, 2, 3}) {
    ThreadCount scope(threads);
    EXPECT_EQ(threads_used(64), threads) << "at::set_num_threads(" << threads << ")";
  }
}

TEST(KernelThreads, ChunksCoverTheRangeOnceAndRespectTheGrain) {
  ThreadCount scope(4);
  for (std::int64_t n : {1, 2, 7, 100, 1001}) {
    for (std::int64_t grain : {1, 3, 64, 5000}) {
      std::vector<std::atomic<int>> seen(static_cast<std::size_t>(n));
      std::atomic<int> chunks{0};
      parallel_for(n, grain, [&](std::int64_t begin, std::int64_t end) {
        EXPECT_LT(begin, end);
        ++chunks;
        for (std::int64_t i = begin; i < end; ++i) ++seen[static_cast<std::size_t>(i)];
      });
      for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[static_cast<std::size_t>(i)], 1) << i;
      EXPECT_LE(chunks, (n + grain - 1) / grain) << "n " << n << " grain " << grain;
    }
  }
  bool called = false;
  parallel_for(0, 1, [&](std::int64_t, std::int64_t) { called = true; });
  EXPECT_FALSE(called);
}

// Note [Chunks taken in turn]: each thread's share of the first half, then chunks that shrink to
// the grain, so that the last ones, which a thread may wait for, are short.
TEST(KernelThreads, ChunksShrinkFromAShareOfHalfTheRangeToTheGrain) {
  ThreadCount scope(2);
  const std::int64_t n = 1000, grain = 4;
  std::mutex mutex;
  std::vector<std::pair<std::int64_t, std::int64_t>> chunks;
  parallel_for(n, grain, [&](std::int64_t begin, std::int64_t end) {
    std::lock_guard<std::mutex> lock(mutex);
    chunks.emplace_back(begin, end);
  });
  std::sort(chunks.begin(), chunks.end());
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks[0], std::make_pair(std::int64_t{0}, std::int64_t{250}));    // thread 0's share
  EXPECT_EQ(chunks[1], std::make_pair(std::int64_t{250}, std::int64_t{500}));  // thread 1's share
  for (std::size_t i = 2; i < chunks.size(); ++i) {
    const std::int64_t size = chunks[i].second - chunks[i].first;
    EXPECT_EQ(chunks[i].first, chunks[i - 1].second) << "chunk " << i;
    // remaining / (2 · threads), never below the grain (the last one may be cut by the end).
    const std::int64_t remaining = n - chunks[i].first;
    EXPECT_EQ(size, std::min(remaining, std::max(grain, remaining / 4))) << "chunk " << i;
  }
  EXPECT_EQ(chunks.back().second, n);
  EXPECT_LE(chunks.back().second - chunks.back().first, grain);
}

TEST(KernelThreads, AnExceptionInAChunkReachesTheCaller) {
  ThreadCount scope(2);
  EXPECT_THROW(parallel_for(8, 1,
                            [](std::int64_t begin, std::int64_t) {
                              if (begin > 0) throw std::runtime_error("chunk failed");
                            }),
               std::runtime_error);
}

}  // namespace
}  // namespace ferry::kernels
