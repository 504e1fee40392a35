// One set of flags, one plan: the streaming figures the front end plans headers with
// (runtime_options, LibTorch-free) are those the engine derives from the load options it runs
// with (dispatch::runtime_of(load_options(flags).dispatch)).
#include <gtest/gtest.h>

#include "cli/load_options.h"
#include "cli/placement_flags.h"
#include "ferry/dispatch/load_checkpoint.h"

namespace ferry::cli {
namespace {

void expect_same(const PlacementFlags& f) {
  const plan::RuntimeOptions front = runtime_options(f);
  const plan::RuntimeOptions engine = dispatch::runtime_of(load_options(f, 0).dispatch);
  EXPECT_EQ(front.streaming, engine.streaming) << f.io << " " << f.no_prefetch;
  EXPECT_EQ(front.direct_io, engine.direct_io) << f.io;
  EXPECT_EQ(front.staging_bytes, engine.staging_bytes) << f.prefetch_bytes;
  EXPECT_EQ(front.kv_cache_bytes, engine.kv_cache_bytes);
  EXPECT_EQ(front.activation_bytes, engine.activation_bytes);
  EXPECT_EQ(front.footprint_bytes, engine.footprint_bytes);
}

TEST(RuntimeOptions, FrontEndAndEngineAgreeOnEveryReadMode) {
  for (const char* io : {"auto", "inplace", "direct", "buffered", "mmap"}) {
    for (const bool no_prefetch : {false, true}) {
      for (const char* staging : {"", "64MiB", "1000"}) {
        PlacementFlags f;
        f.io = io;
        f.no_prefetch = no_prefetch;
        f.prefetch_bytes = staging;
        expect_same(f);
      }
    }
  }
}

// Auto may read any page with O_DIRECT, so staging is padded to pages as for direct. By default
// it uses cached tensors in place; copy copies them.
TEST(RuntimeOptions, AutoIsTheDefaultAndPadsStagingAsDirect) {
  PlacementFlags f;
  EXPECT_EQ(f.io, "auto");
  EXPECT_EQ(load_options(f, 0).dispatch.prefetch->read_mode, io::ReadMode::Auto);
  EXPECT_TRUE(runtime_options(f).direct_io);
  EXPECT_TRUE(load_options(f, 0).dispatch.prefetch->in_place);
  f.io = "buffered";
  EXPECT_FALSE(runtime_options(f).direct_io);
  // inplace is auto's former name.
  f.io = "inplace";
  EXPECT_EQ(load_options(f, 0).dispatch.prefetch->read_mode, io::ReadMode::Auto);
  EXPECT_TRUE(load_options(f, 0).dispatch.prefetch->in_place);
  EXPECT_TRUE(runtime_options(f).direct_io);
  // copy reads as auto (staging padded alike) but copies what the page cache holds.
  f.io = "copy";
  EXPECT_EQ(load_options(f, 0).dispatch.prefetch->read_mode, io::ReadMode::Auto);
  EXPECT_FALSE(load_options(f, 0).dispatch.prefetch->in_place);
  EXPECT_TRUE(runtime_options(f).direct_io);
}

TEST(RuntimeOptions, StagingFlagIsCountedAsGiven) {
  PlacementFlags f;
  f.prefetch_bytes = "64MiB";
  EXPECT_EQ(runtime_options(f).staging_bytes, std::uint64_t{64} << 20);
  f.io = "mmap";
  EXPECT_FALSE(runtime_options(f).staging_bytes.has_value());  // nothing is staged
}

// The budgets and reserves `ferry plan` plans headers with are those the engine loads with.
TEST(RuntimeOptions, FrontEndAndEngineAgreeOnBudgetsAndReserves) {
  for (const char* max_memory : {"", "cpu=2GiB", "cpu=1GiB,disk=10GiB", "cpu=5GiB,disk=100GiB"}) {
    for (const char* reserve : {"", "100MiB", "cpu=64MiB"}) {
      PlacementFlags f;
      f.max_memory = max_memory;
      f.reserve = reserve;
      const dispatch::LoadAndDispatchOptions engine = load_options(f, 0).dispatch;
      const std::optional<plan::MemoryBudget> front = max_memory_of(f);
      ASSERT_EQ(front.has_value(), engine.max_memory.has_value()) << max_memory;
      if (front) {
        EXPECT_EQ(front->to_string(), engine.max_memory->to_string()) << max_memory;
      }
      EXPECT_EQ(reserve_budget(f.reserve, front).to_string(), engine.reserve.to_string())
          << max_memory << " reserve " << reserve;
      if (*max_memory != '\0') {
        EXPECT_TRUE(front.has_value());
      }
    }
  }
}

}  // namespace
}  // namespace ferry::cli
