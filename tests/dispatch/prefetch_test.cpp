#include "ferry/dispatch/prefetch.h"

#include <gtest/gtest.h>

#include <array>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <type_traits>
#include <unistd.h>

#include "../../src/dispatch/staging_pool.h"
#include "dispatch_test_models.h"
#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/memory.h"
#include "ferry/dispatch/dispatch_model.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/linear.h"
#include "scratch_dir.h"

namespace ferry::dispatch {
namespace {

using testing::TinyStack;
using TempDir = ferry::testing::ScratchDir;

// Linear layers applied in an order chosen per call: the execution order a prefetcher records
// can be wrong on the next call.
class Reorderable : public nn::Callable<Reorderable> {
 public:
  Reorderable(std::int64_t dim, int n) : Callable("Reorderable") {
    auto list = register_module("layers", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < n; ++i)
      layers.push_back(list->push_back(std::make_shared<nn::Linear>(dim, dim)));
  }
  std::vector<std::shared_ptr<nn::Linear>> layers;
  std::vector<int> order;

 private:
  friend class Callable<Reorderable>;
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = x;
    for (int i : order) h = at::tanh((*layers[i])(h));
    return h;
  }
};

TEST(StagingPool, ReusesArenasBySizeAndStaysUnderItsLimit) {
  auto pool = StagingPool::create();
  std::byte* first = nullptr;
  {
    auto a = pool->acquire(10000, 1 << 20);
    first = a->data();
    EXPECT_EQ(a->size(), 12288U);  // whole pages
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a->data()) % 4096, 0U);
    EXPECT_EQ(pool->live_bytes(), 12288U);
  }
  EXPECT_EQ(pool->live_bytes(), 0U);
  EXPECT_EQ(pool->cached_bytes(), 12288U);
  {
    auto again = pool->acquire(12000, 1 << 20);
    EXPECT_EQ(again->data(), first);  // the cached arena of that size
    EXPECT_EQ(pool->cached_bytes(), 0U);
  }
  // A new size that does not fit beside the cache drops the cache first.
  auto big = pool->acquire(16384, 20000);
  EXPECT_EQ(pool->cached_bytes(), 0U);
  EXPECT_EQ(pool->live_bytes(), 16384U);
  EXPECT_LE(pool->peak_bytes(), 16384U + 12288U);
}

// The property test of dispatch_model, with the prefetcher on (looking ahead or not, O_DIRECT or
// buffered reads, default or tight budgets) and off: every configuration gives the undispatched
// output bit for bit on every one of several forwards, and staging stays within its budget.
TEST(Prefetch, RandomDeviceMapsGiveTheSameOutputsWithAndWithoutPrefetch) {
  std::mt19937 rng(4321);
  for (int trial = 0; trial < 120; ++trial) {
    SimGpuScope gpus({256_KiB, 256_KiB});
    at::manual_seed(trial);
    TinyStack reference(19, 8, 3);
    const at::Tensor ids = at::randint(19, {2, 5});
    const at::Tensor expected = reference(ids);
    const plan::DeviceMap map = testing::random_stack_map(rng);
    const int variant = trial % 4;
    std::optional<PrefetchOptions> prefetch;
    if (variant > 0) {
      prefetch = PrefetchOptions{
          .lookahead = variant != 1,
          .host_budget_bytes =
              variant == 3 ? std::optional<std::uint64_t>((64_KiB).value()) : std::nullopt,
          .device_budget_bytes =
              variant == 3 ? std::optional<std::uint64_t>((16_KiB).value()) : std::nullopt,
          .read_mode = std::array{io::ReadMode::Direct, io::ReadMode::Buffered,
                                  io::ReadMode::Auto}[static_cast<std::size_t>(trial / 4 % 3)],
          .direct_min_bytes = 0};  // these tensors are tiny: read them with O_DIRECT anyway
    }
    TempDir dir;
    at::manual_seed(trial);
    TinyStack model(19, 8, 3);  // the reference's weights
    dispatch_model(model, map, DispatchOptions{.offload_dir = dir.path(), .prefetch = prefetch});
    for (int forward = 0; forward < 3; ++forward) {
      ASSERT_TRUE(at::equal(model(ids), expected))
          << "trial " << trial << " variant " << variant << " forward " << forward << " map "
          << map.to_json();
    }
    const std::shared_ptr<Prefetcher> p = model_prefetcher(model);
    const bool any_gpu = map.uses(Placement::gpu(0)) || map.uses(Placement::gpu(1));
    const bool offloaded = map.uses(Placement::disk()) || (map.uses(Placement::cpu()) && any_gpu);
    ASSERT_EQ(p != nullptr, prefetch.has_value() && offloaded) << map.to_json();
    if (p) {
      const PrefetchStats s = p->stats();
      EXPECT_LE(s.peak_host_reserved_bytes, s.host_budget_bytes) << "trial " << trial;
      EXPECT_LE(s.peak_device_reserved_bytes, s.device_budget_bytes) << "trial " << trial;
      EXPECT_LE(s.peak_pool_bytes, s.host_budget_bytes) << "trial " << trial;
      // Forwards in which blocks ran (a map whose only offloaded entry is a buffer has none).
      EXPECT_EQ(s.forwards, s.blocks > 0 ? 3U : 0U) << map.to_json();
      EXPECT_EQ(s.hits + s.waits + s.late + s.misses, 3 * s.blocks);
    }
    for (int g = 0; g < 2; ++g) EXPECT_LE(sim_gpu_stats(g).peak, 256_KiB);
  }
}

struct DiskModel {
  TempDir dir;
  std::unique_ptr<TinyStack> model;
  at::Tensor ids;
  at::Tensor expected;

  explicit DiskModel(std::optional<PrefetchOptions> prefetch) {
    at::manual_seed(7);
    model = std::make_unique<TinyStack>(64, 32, 6);
    ids = at::randint(64, {1, 7});
    expected = (*model)(ids);
    disk_offload(*model, dir.path(), OffloadOptions{.prefetch = prefetch});
  }
  Prefetcher& prefetcher() { return *model_prefetcher(*model); }
};

TEST(Prefetch, AfterTheFirstForwardEveryBlockIsPrefetched) {
  DiskModel m(PrefetchOptions{.host_budget_bytes = (64_MiB).value(), .in_place = false});
  EXPECT_TRUE(at::equal((*m.model)(m.ids), m.expected));
  const PrefetchStats first = m.prefetcher().stats();
  EXPECT_EQ(first.misses, first.blocks);  // nothing known yet: every block loaded on demand
  EXPECT_GT(first.bytes_read, 0U);
  ASSERT_EQ(m.prefetcher().recorded_order().size(), first.blocks);
  EXPECT_EQ(m.prefetcher().recorded_order().front(), "embed");
  // Given the time (the loader is idle before each forward), every block is ready when it runs.
  for (int i = 0; i < 3; ++i) {
    m.prefetcher().wait_idle();
    EXPECT_TRUE(at::equal((*m.model)(m.ids), m.expected));
  }
  const PrefetchStats later = m.prefetcher().stats();
  EXPECT_EQ(later.misses, first.misses);  // no block ran unannounced
  EXPECT_EQ(later.hits, 3 * first.blocks);
  EXPECT_EQ(later.waits + later.late, 0U);
  EXPECT_EQ(later.evictions, 0U);
}

// Drops the page cache's copies of the files under `dir` (written back first).
void evict_folder(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY);
    ASSERT_GE(fd, 0) << entry.path();
    ::fsync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Rewrites every file under `dir` with its own bytes, through a truncation.
void rewrite_folder(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::string bytes;
    {
      std::ifstream in(entry.path(), std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    std::ofstream out(entry.path(), std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << entry.path();
  }
}

// Whether the offload folder's data file can be read with O_DIRECT (the test fails when the
// folder has none).
bool does_o_direct(const std::filesystem::path& folder) {
  std::filesystem::path dat;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    if (entry.path().extension() == ".dat") dat = entry.path();
  }
  EXPECT_FALSE(dat.empty()) << "no .dat file in " << folder;
  return !dat.empty() && io::DirectReader().is_direct(dat);
}

// Runs `n` forwards of `m`, each giving the expected output, and waits for the prefetches they
// started.
void expect_forwards(DiskModel& m, int n) {
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(at::equal((*m.model)(m.ids), m.expected));
    m.prefetcher().wait_idle();
  }
}

// Reads every file under `dir` through the page cache.
void warm_folder(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<char> buffer(1 << 16);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
    }
  }
}

// --io copy (Note [Reading what the page cache holds]): the offload folder just written is in
// the page cache, so every byte is copied from it; once evicted, the bytes come with O_DIRECT.
TEST(Prefetch, AutoReadsServeCachedBytesFromThePageCacheAndTheRestDirect) {
  DiskModel m(
      PrefetchOptions{.read_mode = io::ReadMode::Auto, .in_place = false, .direct_min_bytes = 0});
  if (!does_o_direct(m.dir.path())) GTEST_SKIP() << m.dir.path() << " does not do O_DIRECT";
  expect_forwards(m, 1);
  const PrefetchStats warm = m.prefetcher().stats();
  EXPECT_GE(warm.page_cache_bytes, warm.bytes_read);  // page padding included
  EXPECT_EQ(warm.direct_bytes, 0U);
  EXPECT_EQ(warm.in_place_bytes, 0U);  // copied: in place only with in_place
  EXPECT_EQ(borrowed_pages().value(), 0U);

  evict_folder(m.dir.path());
  expect_forwards(m, 2);
  const PrefetchStats cold = m.prefetcher().stats();
  EXPECT_GT(cold.direct_bytes, 0U);
  EXPECT_EQ(cold.page_cache_bytes, warm.page_cache_bytes);  // O_DIRECT cached nothing
}

// --io auto, the default (Note [Weights used in place]): evicted, the offload folder's bytes come
// with O_DIRECT and stay out of the page cache; once the cache holds the files, CPU blocks
// compute from its pages in place, with the same outputs, and those pages are counted as
// borrowed page cache (Note [Page cache used in place]) until the files are closed.
TEST(Prefetch, InPlaceReadsColdBytesDirectAndUsesCachedOnesInPlace) {
  EXPECT_TRUE(PrefetchOptions{}.in_place);  // the default
  std::uint64_t in_place_once = 0;
  {
    DiskModel m(PrefetchOptions{.read_mode = io::ReadMode::Auto, .direct_min_bytes = 0});
    if (!does_o_direct(m.dir.path())) GTEST_SKIP() << m.dir.path() << " does not do O_DIRECT";
    evict_folder(m.dir.path());
    expect_forwards(m, 2);
    const PrefetchStats cold = m.prefetcher().stats();
    EXPECT_GT(cold.direct_bytes, 0U);
    EXPECT_EQ(cold.in_place_bytes, 0U);
    EXPECT_EQ(cold.page_cache_bytes, 0U);  // the second forward found nothing cached by the first
    EXPECT_EQ(borrowed_pages().value(), 0U);

    warm_folder(m.dir.path());
    expect_forwards(m, 1);
    in_place_once = m.prefetcher().stats().in_place_bytes;
    EXPECT_GT(in_place_once, 0U);
    // Every page of the tensors used in place, counted once: no fewer than their bytes.
    const std::uint64_t borrowed = borrowed_pages().value();
    EXPECT_GE(borrowed, in_place_once);
    EXPECT_EQ(borrowed % io::DirectReader::kAlignment, 0U);
    // Then each forward uses the same tensors in place, once each (the first two warm forwards
    // differ: blocks were prefetched for the next forward before they became blocks used in
    // place, Note [Blocks used in place]).
    expect_forwards(m, 1);
    const std::uint64_t second = m.prefetcher().stats().in_place_bytes;
    expect_forwards(m, 1);
    const std::uint64_t third = m.prefetcher().stats().in_place_bytes;
    expect_forwards(m, 1);
    const PrefetchStats warm = m.prefetcher().stats();
    EXPECT_GT(third - second, 0U);
    EXPECT_EQ(warm.in_place_bytes - third, third - second);
    EXPECT_EQ(borrowed_pages().value(), borrowed);    // the same pages again: not counted twice
    EXPECT_EQ(warm.direct_bytes, cold.direct_bytes);  // nothing more came from the disk
    EXPECT_EQ(warm.page_cache_bytes, 0U);             // nor was copied
    // Note [Blocks used in place]: such blocks are taken when they run, not prefetched, so
    // nothing is reserved between forwards.
    EXPECT_EQ(warm.host_reserved_bytes, 0U);

    // The files are rewritten (truncating a file unmaps its cached pages from every mapping)
    // and dropped from the cache: the tensors are read again (O_DIRECT), with the same outputs.
    rewrite_folder(m.dir.path());
    evict_folder(m.dir.path());
    expect_forwards(m, 2);
    const PrefetchStats evicted = m.prefetcher().stats();
    EXPECT_GT(evicted.direct_bytes, warm.direct_bytes);
    EXPECT_GT(evicted.misses, warm.misses);
  }
  EXPECT_GT(in_place_once, 0U);
  EXPECT_EQ(borrowed_pages().value(), 0U);  // the files closed, their mappings gone
}

TEST(Prefetch, StagingNeverExceedsItsBudget) {
  // Budget: a little over the largest block (the tied embedding/head) — prefetching is tight.
  const std::uint64_t budget = 64 * 32 * 4 + 3 * 4096 + 2 * 4096;
  DiskModel m(PrefetchOptions{.host_budget_bytes = budget, .direct_min_bytes = 0});
  for (int i = 0; i < 5; ++i) {
    m.prefetcher().wait_idle();
    ASSERT_TRUE(at::equal((*m.model)(m.ids), m.expected)) << "forward " << i;
  }
  const PrefetchStats s = m.prefetcher().stats();
  EXPECT_EQ(s.host_budget_bytes, budget);
  EXPECT_LE(s.peak_host_reserved_bytes, budget);
  EXPECT_LE(s.peak_pool_bytes, budget);
  EXPECT_GT(s.hits + s.waits, 0U);  // some blocks still came ahead of need
}

TEST(Prefetch, ABudgetSmallerThanABlockIsOutOfBudgetNamingTheBlock) {
  DiskModel m(PrefetchOptions{.host_budget_bytes = 1024});
  try {
    (*m.model)(m.ids);
    FAIL() << "expected OutOfBudget";
  } catch (const OutOfBudget& e) {
    EXPECT_NE(std::string(e.what()).find("block 'embed'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("host staging memory but the prefetch budget is 1024 "
                                         "bytes and 0 bytes are held by the blocks running now "
                                         "[none]"),
              std::string::npos)
        << e.what();
  }
}

TEST(Prefetch, BadOptionsAreInvalidArguments) {
  try {
    Prefetcher p(PrefetchOptions{.threads = 0});
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("at least one loader thread, got 0"), std::string::npos)
        << e.what();
  }
  // A block executing on disk does not compile: add_block takes an ExecutionDevice.
  using AddBlock = decltype(&Prefetcher::add_block);
  static_assert(std::is_invocable_v<AddBlock, Prefetcher&, std::string, std::string,
                                    ExecutionDevice, std::vector<BlockTensor>, bool>);
  static_assert(!std::is_invocable_v<AddBlock, Prefetcher&, std::string, std::string, Placement,
                                     std::vector<BlockTensor>, bool>);
}

TEST(Prefetch, OutOfOrderExecutionIsCorrectOnlySlower) {
  at::manual_seed(3);
  Reorderable model(16, 6);
  const at::Tensor x = at::randn({2, 16});
  const std::vector<std::vector<int>> orders{
      {0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}, {0, 2, 4}, {1, 3, 5, 0}, {3}};
  std::vector<at::Tensor> expected;
  for (const auto& o : orders) {
    model.order = o;
    expected.push_back(model(x));
  }
  TempDir dir;
  disk_offload(model, dir.path(),
               OffloadOptions{
                   .prefetch = PrefetchOptions{.host_budget_bytes = 3 * 4096, .in_place = false}});
  for (std::size_t i = 0; i < orders.size(); ++i) {
    model.order = orders[i];
    ASSERT_TRUE(at::equal(model(x), expected[i])) << "order " << i;
  }
  Prefetcher& p = *model_prefetcher(model);
  const PrefetchStats s = p.stats();
  EXPECT_GT(s.misses, 6U);     // the reversed and partial orders ran blocks nobody prefetched
  EXPECT_GT(s.evictions, 0U);  // and left prefetched blocks unused
  EXPECT_EQ(p.recorded_order(), std::vector<std::string>{"layers.3"});  // the last forward's
  EXPECT_LE(s.peak_host_reserved_bytes, s.host_budget_bytes);
}

TEST(Prefetch, SimulatedGpuStreamingCopiesEachBlockOncePerForward) {
  SimGpuScope gpus({1_MiB});
  at::manual_seed(5);
  TinyStack model(64, 32, 4);
  const at::Tensor ids = at::randint(64, {1, 5});
  const at::Tensor expected = model(ids);
  std::uint64_t param_bytes = 0;
  for (const auto& p : model.named_parameters()) param_bytes += p.tensor().nbytes();
  cpu_offload(
      model, OffloadOptions{.execution_device = ExecutionDevice::gpu(0),
                            .prefetch = PrefetchOptions{.device_budget_bytes = (128_KiB).value()}});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(at::equal(model(ids).cpu(), expected));
  const PrefetchStats s = model_prefetcher(model)->stats();
  // Each forward moves every parameter once, the tied embedding/head twice (the two modules do
  // not run at once); the prefetch for a fourth forward may have started.
  const std::uint64_t per_forward = param_bytes + 64 * 32 * 4;
  EXPECT_GE(s.bytes_to_device, 3 * per_forward);
  EXPECT_LE(s.bytes_to_device, 4 * per_forward);
  EXPECT_EQ(s.bytes_read, 0U);  // weights came from memory
  EXPECT_LE(sim_gpu_stats(0).peak.value(),
            (128_KiB).value() + (16_KiB).value());  // + activations and the buffer
}

TEST(Prefetch, TruncatedFileSurfacesAsATypedErrorFromTheForwardThatNeedsIt) {
  // A budget of a few blocks: layers.3 is read during the next forward, after the truncation.
  DiskModel m(PrefetchOptions{.host_budget_bytes = (32_KiB).value(), .direct_min_bytes = 0});
  ASSERT_TRUE(at::equal((*m.model)(m.ids), m.expected));
  const std::filesystem::path victim = m.dir.path() / "layers.3.fc1.weight.dat";
  ASSERT_TRUE(std::filesystem::exists(victim));
  const std::filesystem::path saved = m.dir.path() / "saved.bin";
  std::filesystem::copy_file(victim, saved);
  std::filesystem::resize_file(victim, std::filesystem::file_size(victim) / 2);
  try {
    (*m.model)(m.ids);
    FAIL() << "expected CorruptFile";
  } catch (const CorruptFile& e) {
    EXPECT_NE(std::string(e.what()).find("layers.3.fc1.weight.dat"), std::string::npos) << e.what();
  }
  const PrefetchStats after = m.prefetcher().stats();
  EXPECT_LE(after.host_reserved_bytes, after.host_budget_bytes);
  EXPECT_LE(after.pool_bytes, after.host_budget_bytes);
  // The model recovers once the file is whole again: nothing was left half taken.
  std::filesystem::copy_file(saved, victim, std::filesystem::copy_options::overwrite_existing);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(at::equal((*m.model)(m.ids), m.expected));
}

TEST(Prefetch, WithoutLookaheadBlocksAreLoadedWhenTheyRun) {
  DiskModel m(PrefetchOptions{.lookahead = false, .in_place = false});
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(at::equal((*m.model)(m.ids), m.expected));
  const PrefetchStats s = m.prefetcher().stats();
  EXPECT_EQ(s.misses, 2 * s.blocks);
  EXPECT_EQ(s.hits + s.waits, 0U);
  EXPECT_EQ(s.host_reserved_bytes, 0U);  // nothing held between forwards
}

}  // namespace
}  // namespace ferry::dispatch

namespace ferry::dispatch {
namespace {

// Blocks resting on the CPU run there for calls of few rows (only activations move to and from
// the GPU) and stream to the GPU for larger ones; both give the undispatched output.
TEST(ComputeWhereWeightsRest, SmallCallsRunOnTheCpuLargeOnesStream) {
  SimGpuScope gpus({1_MiB});
  at::manual_seed(11);
  testing::TinyStack model(29, 16, 3);
  const at::Tensor small = at::randint(29, {1, 3});  // 3 rows
  const at::Tensor large = at::randint(29, {2, 6});  // 12 rows
  const at::Tensor expected_small = model(small);
  const at::Tensor expected_large = model(large);
  dispatch_model(
      model,
      plan::DeviceMap{{"embed", Placement::gpu(0)},
                      {"head", Placement::gpu(0)},
                      {"layers.0", Placement::cpu()},
                      {"layers.1", Placement::cpu()},
                      {"layers.2", Placement::gpu(0)},
                      {"norm", Placement::gpu(0)},
                      {"scale", Placement::gpu(0)}},
      DispatchOptions{.compute = {.where = ComputePolicy::Where::kWeights, .max_rows = 4}});
  ASSERT_NE(model_prefetcher(model), nullptr);
  Prefetcher& p = *model_prefetcher(model);
  const std::uint64_t gpu_in_before = sim_gpu_stats(0).bytes_in;
  EXPECT_TRUE(at::equal(model(small).cpu(), expected_small));
  EXPECT_EQ(p.stats().bytes_to_device, 0U);  // no weight moved
  // Only activations crossed: far less than the two CPU layers' weights.
  const std::uint64_t cpu_layer_bytes =
      2 * (16 * 32 * 4 + 32 * 4 + 32 * 16 * 4 + 16 * 4 + 2 * 16 * 4);
  EXPECT_LT(sim_gpu_stats(0).bytes_in - gpu_in_before, cpu_layer_bytes / 4);
  EXPECT_TRUE(at::equal(model(large).cpu(), expected_large));
  EXPECT_GE(p.stats().bytes_to_device, cpu_layer_bytes);  // streamed this time
  EXPECT_TRUE(at::equal(model(small).cpu(), expected_small));
}

}  // namespace
}  // namespace ferry::dispatch
