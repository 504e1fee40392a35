// The KV cache's buffers (Note [Cache buffers]): appends write into room kept past the history,
// the history they return equals the concatenation of every step, growth stays within the cap.

#include "ferry/models/kv_cache.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>
#include <vector>

namespace ferry::models {
namespace {

// A step's key or value: [batch 2, heads 3, tokens, dim 4], as a transposed view like the
// attention's heads() makes.
at::Tensor step(std::int64_t tokens, int seed) {
  at::manual_seed(seed);
  return at::randn({2, tokens, 3, 4}).transpose(1, 2);
}

TEST(LayerCache, HistoryIsEveryStepConcatenated) {
  for (const std::int64_t cap : {std::int64_t{0}, std::int64_t{5}, std::int64_t{40}}) {
    LayerCache cache;
    cache.set_max_positions(cap);
    std::vector<at::Tensor> keys, values;
    for (int s = 0; s < 30; ++s) {
      const std::int64_t tokens = s == 0 ? 7 : 1 + s % 3;
      keys.push_back(step(tokens, 2 * s));
      values.push_back(step(tokens, 2 * s + 1));
      const auto [k, v] = cache.append(keys.back(), values.back());
      ASSERT_TRUE(at::equal(k, at::cat(keys, 2))) << "cap " << cap << " step " << s;
      ASSERT_TRUE(at::equal(v, at::cat(values, 2))) << "cap " << cap << " step " << s;
      EXPECT_EQ(cache.length(), k.size(2));
      EXPECT_GE(cache.capacity(), cache.length());
    }
  }
}

TEST(LayerCache, EarlierHistoryStaysValidAfterLaterAppends) {
  LayerCache cache;
  cache.set_max_positions(64);
  cache.append(step(4, 1), step(4, 2));
  const auto [k5, v5] = cache.append(step(1, 3), step(1, 4));
  const at::Tensor k5_copy = k5.clone();
  for (int s = 0; s < 10; ++s) cache.append(step(1, 10 + s), step(1, 30 + s));
  EXPECT_TRUE(at::equal(k5, k5_copy));
  EXPECT_TRUE(at::equal(cache.key().narrow(2, 0, 5), k5_copy));
}

TEST(LayerCache, TakesTheCapAtOnceAndGrowsNoFurther) {
  LayerCache cache;
  cache.set_max_positions(50);
  cache.append(step(8, 1), step(8, 2));
  EXPECT_EQ(cache.capacity(), 8);  // the prefill as it came
  cache.append(step(1, 3), step(1, 4));
  EXPECT_EQ(cache.capacity(), 50);  // the whole cap: the history is copied this once
  const void* buffer = cache.key().data_ptr();
  while (cache.length() < 50) {
    cache.append(step(1, 5), step(1, 6));
    EXPECT_EQ(cache.capacity(), 50);
    ASSERT_EQ(cache.key().data_ptr(), buffer) << "moved at length " << cache.length();
  }
  // Bytes held: the buffers, room included, never past the cap.
  EXPECT_EQ(cache.size_bytes().value(), 2u * 2 * 3 * 50 * 4 * sizeof(float));
  // Past the cap (not planned for): what it needs, by steps.
  cache.append(step(1, 7), step(1, 8));
  EXPECT_EQ(cache.capacity(), LayerCache::kCacheStep);
}

TEST(LayerCache, PagesAheadOfTheHistoryAreCommittedBeforeTheyAreWritten) {
  // Note [Cache pages committed ahead]: after a step, the next positions' pages of every row are
  // resident already (where the kernel has MADV_POPULATE_WRITE, 5.14 and later).
  {
    // A kernel before 5.14 has no MADV_POPULATE_WRITE: the pages fault in when written.
    void* probe = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(probe, MAP_FAILED);
    const bool supported = ::madvise(probe, 4096, 23 /* MADV_POPULATE_WRITE */) == 0;
    ::munmap(probe, 4096);
    if (!supported) GTEST_SKIP() << "this kernel cannot commit pages ahead";
  }
  LayerCache cache;
  cache.set_max_positions(4096);
  const auto one = [](std::int64_t t, int seed) {
    at::manual_seed(seed);
    return at::randn({1, 2, t, 64});
  };
  cache.append(one(3, 1), one(3, 2));
  cache.append(one(1, 3), one(1, 4));
  const long page = ::sysconf(_SC_PAGESIZE);
  for (const at::Tensor* buffer : {&cache.key(), &cache.value()}) {
    for (std::int64_t h = 0; h < 2; ++h) {
      // Positions [4, 4 + 64): 64 × 256 bytes past the history, whole pages only.
      auto first = reinterpret_cast<std::uintptr_t>(buffer->select(1, h).data_ptr<float>()) +
                   4 * 64 * sizeof(float);
      first =
          (first + static_cast<std::uintptr_t>(page) - 1) & ~static_cast<std::uintptr_t>(page - 1);
      const std::size_t pages = 3;
      std::vector<unsigned char> resident(pages);
      ASSERT_EQ(::mincore(reinterpret_cast<void*>(first), pages * static_cast<std::size_t>(page),
                          resident.data()),
                0);
      for (std::size_t p = 0; p < pages; ++p) {
        EXPECT_TRUE(resident[p] & 1) << "head " << h << " page " << p;
      }
    }
  }
}

TEST(LayerCache, UncappedGrowsBySteps) {
  LayerCache cache;
  cache.append(step(3, 1), step(3, 2));
  cache.append(step(1, 3), step(1, 4));
  EXPECT_EQ(cache.capacity(), LayerCache::kCacheStep);
  while (cache.length() < LayerCache::kCacheStep) cache.append(step(1, 5), step(1, 6));
  EXPECT_EQ(cache.capacity(), LayerCache::kCacheStep);
  cache.append(step(1, 7), step(1, 8));
  EXPECT_EQ(cache.capacity(), 2 * LayerCache::kCacheStep);
}

TEST(LayerCache, AssignedTensorsAreNeverWrittenInto) {
  // assign() may hand the cache a view of someone else's tensor (a pipeline's rows): the next
  // append copies the history into buffers of its own instead of writing past the view.
  const at::Tensor whole_k = at::zeros({4, 3, 10, 4});
  const at::Tensor whole_v = at::zeros({4, 3, 10, 4});
  LayerCache cache;
  cache.set_max_positions(100);
  cache.assign(whole_k.narrow(0, 0, 2).narrow(2, 0, 6), whole_v.narrow(0, 0, 2).narrow(2, 0, 6));
  const auto [k, v] = cache.append(at::ones({2, 3, 1, 4}), at::ones({2, 3, 1, 4}));
  EXPECT_EQ(k.size(2), 7);
  EXPECT_TRUE(at::equal(whole_k, at::zeros_like(whole_k)));
  EXPECT_TRUE(at::equal(whole_v, at::zeros_like(whole_v)));
  EXPECT_TRUE(at::equal(k.narrow(2, 6, 1), at::ones({2, 3, 1, 4})));
}

TEST(LayerCache, FollowsTheStepsDtype) {
  LayerCache cache;
  cache.set_max_positions(16);
  cache.append(step(2, 1), step(2, 2));
  cache.append(step(1, 3), step(1, 4));
  const auto [k, v] = cache.append(step(1, 5).to(at::kDouble), step(1, 6).to(at::kDouble));
  EXPECT_EQ(k.scalar_type(), at::kDouble);
  EXPECT_EQ(k.size(2), 4);
}

TEST(KvCache, KeepAndAppendRowsAfterBufferedAppends) {
  KvCache cache(2);
  cache.set_max_positions(32);
  std::vector<at::Tensor> keys;
  for (int s = 0; s < 5; ++s) {
    keys.push_back(step(s == 0 ? 3 : 1, s));
    for (std::size_t l = 0; l < 2; ++l) cache.layer(l).append(keys.back(), keys.back());
  }
  const at::Tensor expected = at::cat(keys, 2);
  cache.keep(at::tensor({1}, at::kLong), 2, 5);
  EXPECT_TRUE(at::equal(cache.layer(1).key(), expected.narrow(0, 1, 1).narrow(2, 2, 5)));
  // And appends go on after keep (new buffers: keep's tensors are exact).
  const at::Tensor next = step(1, 99).narrow(0, 0, 1);
  const auto [k, v] = cache.layer(0).append(next, next);
  EXPECT_TRUE(at::equal(k, at::cat({expected.narrow(0, 1, 1).narrow(2, 2, 5), next}, 2)));
  EXPECT_GE(cache.size_bytes().value(), 2 * k.nbytes());
}

}  // namespace
}  // namespace ferry::models
