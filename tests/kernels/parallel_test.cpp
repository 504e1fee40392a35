#include "ferry/kernels/parallel.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
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
