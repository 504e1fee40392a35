#include "ferry/plan/rank_budgets.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/plan/memory_budget.h"

namespace ferry::plan {
namespace {

// The message of the InvalidArgument `f` throws ("" when it throws nothing).
template <typename F>
std::string invalid_argument(F&& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(BudgetTextForRank, TheIssueExample) {
  const std::string text = "cpu=4GiB,rank1:cpu=8GiB,rank1:0=20GiB";
  EXPECT_EQ(budget_text_for_rank(text, 0), "cpu=4GiB");
  EXPECT_EQ(budget_text_for_rank(text, 1), "cpu=8GiB,0=20GiB");
  EXPECT_EQ(budget_text_for_rank(text, 2), "cpu=4GiB");
}

TEST(BudgetTextForRank, PlainEntriesReachEveryRankUnchanged) {
  for (const std::string text :
       {"cpu=4GiB", "0=20GiB,1=10GiB,cpu=64GiB,disk=100GB", "", " cpu = 1 "}) {
    for (int rank : {0, 1, 5, 63}) {
      const std::string got = budget_text_for_rank(text, rank);
      EXPECT_EQ(MemoryBudget::parse(got, /*gpu_count=*/8),
                MemoryBudget::parse(text, /*gpu_count=*/8))
          << text << " for rank " << rank << " gave " << got;
    }
  }
}

// Random texts of plain and rank entries over 4 ranks, against the rule spelled out: a rank's
// budget of a device is its own entry if it has one, else the plain one, else none.
TEST(BudgetTextForRank, PropertyEachRankGetsItsOwnEntryElseThePlainOne) {
  const std::vector<std::string> devices{"0", "1", "cpu", "disk"};
  std::mt19937 rng(16);
  for (int trial = 0; trial < 300; ++trial) {
    constexpr int kRanks = 4;
    std::map<std::string, std::uint64_t> plain;
    std::vector<std::map<std::string, std::uint64_t>> own(kRanks);
    std::vector<std::string> entries;
    for (const std::string& d : devices) {
      if (rng() % 2 != 0U) {
        plain[d] = 1000 + rng() % 1000;
        entries.push_back(fmt::format("{}={}", d, plain[d]));
      }
      for (int r = 0; r < kRanks; ++r) {
        if (rng() % 3 == 0U) {
          own[static_cast<std::size_t>(r)][d] = 5000 + rng() % 1000;
          entries.push_back(fmt::format("rank{}:{}={}", r, d, own[static_cast<std::size_t>(r)][d]));
        }
      }
    }
    std::shuffle(entries.begin(), entries.end(), rng);
    const std::string text = fmt::format("{}", fmt::join(entries, ","));
    check_rank_budgets(text, kRanks);
    for (int r = 0; r < kRanks; ++r) {
      MemoryBudget expected;
      for (const std::string& d : devices) {
        const auto& mine = own[static_cast<std::size_t>(r)];
        const auto o = mine.find(d);
        const auto p = plain.find(d);
        if (o == mine.end() && p == plain.end()) continue;
        expected.set(Placement::parse(d), Bytes(o != mine.end() ? o->second : p->second));
      }
      EXPECT_EQ(MemoryBudget::parse(budget_text_for_rank(text, r), /*gpu_count=*/2), expected)
          << text << " for rank " << r << " gave " << budget_text_for_rank(text, r);
    }
  }
}

TEST(BudgetTextForRank, RankEntriesOverrideOnlyTheirRankAndDevice) {
  const std::string text =
      "0=20GiB,cpu=4GiB,disk=100GiB,rank0:disk=1GiB,rank2:cpu=8GiB,rank2:1=5GiB";
  const std::vector<std::string> expected{
      "0=20GiB,cpu=4GiB,disk=1GiB",           // rank 0: its disk only
      "0=20GiB,cpu=4GiB,disk=100GiB",         // rank 1: no entries of its own
      "0=20GiB,cpu=8GiB,disk=100GiB,1=5GiB",  // rank 2: its cpu, and a GPU the others lack
      "0=20GiB,cpu=4GiB,disk=100GiB",
  };
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(budget_text_for_rank(text, rank), expected[static_cast<std::size_t>(rank)])
        << "rank " << rank;
  }
}

TEST(BudgetTextForRank, RankEntriesAloneAndGpuKeysCompareAsNumbers) {
  EXPECT_EQ(budget_text_for_rank("rank1:cpu=8GiB", 0), "");  // rank 0: probed
  EXPECT_EQ(budget_text_for_rank("rank1:cpu=8GiB", 1), "cpu=8GiB");
  EXPECT_EQ(budget_text_for_rank("00=1GiB,rank3:0=2GiB", 3), "0=2GiB");
  // Order of the entries does not matter: a rank entry before the plain one still replaces it.
  EXPECT_EQ(budget_text_for_rank("rank1:cpu=8GiB,cpu=4GiB", 1), "cpu=8GiB");
}

TEST(BudgetTextForRank, MalformedRankKeysAreNamed) {
  struct Case {
    std::string text;
    std::string names;  // a part of the message
  };
  const std::vector<Case> cases{
      {"rank:cpu=1", "max_memory entry 'rank:cpu=1': the rank number is missing"},
      {"rankx:cpu=1", "max_memory entry 'rankx:cpu=1': 'x' is not a rank number"},
      {"cpu=1GiB,rankx:=1", "max_memory entry 'rankx:=1'"},
      {"rank-1:cpu=1", "max_memory entry 'rank-1:cpu=1': rank -1 is negative"},
      {"rank1=5GiB", "max_memory entry 'rank1=5GiB': a rank key needs ':' before the device"},
      {"rank1:gpu=5GiB", "max_memory entry 'rank1:gpu=5GiB': 'gpu' is not a device"},
      {"rank1:cpu=1,rank1:cpu=2",
       "max_memory entries 'rank1:cpu=1' and 'rank1:cpu=2': rank 1 gives device cpu twice"},
  };
  for (const Case& c : cases) {
    const std::string message = invalid_argument([&] { (void)budget_text_for_rank(c.text, 0); });
    EXPECT_NE(message.find(c.names), std::string::npos) << c.text << " gave: " << message;
    EXPECT_NE(invalid_argument([&] { check_rank_budgets(c.text); }), "") << c.text;
  }
}

TEST(CheckRankBudgets, RanksAtOrAboveTheWorldSizeAreRefused) {
  EXPECT_EQ(invalid_argument([] { check_rank_budgets("cpu=1,rank1:cpu=2", 2); }), "");
  EXPECT_EQ(invalid_argument([] { check_rank_budgets("rank5:cpu=2"); }), "");  // size unknown
  const std::string message = invalid_argument([] { check_rank_budgets("rank2:cpu=2", 2); });
  EXPECT_NE(message.find("max_memory entry 'rank2:cpu=2': rank 2 is not in a world of 2 rank(s)"),
            std::string::npos)
      << message;
}

TEST(IsRankKey, SeesRankKeysWellFormedOrNot) {
  EXPECT_FALSE(is_rank_key("cpu"));
  EXPECT_FALSE(is_rank_key("0"));
  EXPECT_TRUE(is_rank_key("rank1:cpu"));
  EXPECT_TRUE(is_rank_key("rankx:cpu"));
  EXPECT_TRUE(is_rank_key("rank"));
}

}  // namespace
}  // namespace ferry::plan
