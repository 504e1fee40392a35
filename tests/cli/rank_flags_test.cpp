// The placement flags of one rank of a distributed run (issue 16): --max-memory's `rankN:` entries
// reach the load options of rank N only, and a single process refuses them.
#include <gtest/gtest.h>

#include <string>

#include "cli/load_options.h"
#include "cli/placement_flags.h"
#include "ferry/core/error.h"
#include "ferry/plan/memory_budget.h"

namespace ferry::cli {
namespace {

PlacementFlags flags_of(const std::string& max_memory, std::optional<int> rank,
                        std::optional<int> world_size) {
  PlacementFlags f;
  f.max_memory = max_memory;
  f.rank = rank;
  f.world_size = world_size;
  return f;
}

TEST(RankFlags, EachRankLoadsWithItsOwnBudget) {
  const std::string text = "cpu=4GiB,rank1:cpu=8GiB,rank1:0=20GiB";
  const PlacementFlags rank_0 = flags_of(text, 0, 2);
  const PlacementFlags rank_1 = flags_of(text, 1, 2);
  check_placement_flags(rank_0);
  check_placement_flags(rank_1);
  EXPECT_EQ(max_memory_text(rank_0), "cpu=4GiB");
  EXPECT_EQ(max_memory_text(rank_1), "cpu=8GiB,0=20GiB");
  // The engine's load options (what a rank loads with) and the front end's budgets agree.
  EXPECT_EQ(load_options(rank_0, 0).dispatch.max_memory, max_memory_of(rank_0));
  EXPECT_EQ(load_options(rank_1, 0).dispatch.max_memory,
            plan::MemoryBudget::parse("cpu=8GiB,0=20GiB", /*gpu_count=*/1));
}

TEST(RankFlags, ARankWithoutEntriesIsProbed) {
  const PlacementFlags rank_0 = flags_of("rank1:cpu=8GiB", 0, 2);
  check_placement_flags(rank_0);
  EXPECT_EQ(max_memory_text(rank_0), "");
  EXPECT_EQ(max_memory_of(rank_0), std::nullopt);
}

TEST(RankFlags, ASingleProcessRefusesRankKeys) {
  const PlacementFlags single = flags_of("cpu=4GiB,rank1:cpu=8GiB", std::nullopt, std::nullopt);
  try {
    check_placement_flags(single);
    FAIL() << "rank keys accepted in a single process";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "--max-memory entry 'rank1:cpu=8GiB': rank keys need a distributed run: ferry "
                 "launch or --world-size");
  }
  EXPECT_THROW((void)max_memory_of(single), InvalidArgument);
  // Plain budgets are as before.
  EXPECT_EQ(max_memory_of(flags_of("cpu=4GiB", std::nullopt, std::nullopt)),
            plan::MemoryBudget::parse("cpu=4GiB"));
}

TEST(RankFlags, RanksOutsideTheWorldAreRefused) {
  EXPECT_THROW(check_placement_flags(flags_of("rank2:cpu=8GiB", 0, 2)), InvalidArgument);
  EXPECT_THROW(check_placement_flags(flags_of("cpu=8GiB", 2, 2)), InvalidArgument);
  EXPECT_THROW(check_placement_flags(flags_of("cpu=8GiB", -1, std::nullopt)), InvalidArgument);
  // Every rank's budget is checked, not only this one's: rank 1 gets cpu twice.
  EXPECT_THROW(check_placement_flags(flags_of("cpu=1GiB,cpu=2GiB,rank0:cpu=3GiB", 0, 2)),
               InvalidArgument);
}

}  // namespace
}  // namespace ferry::cli
