#include "ferry/plan/rank_budgets.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/plan/memory_budget.h"

namespace ferry::plan {

// Note [Rank budgets]
// ~~~~~~~~~~~~~~~~~~~
// Each rank of a distributed run brings its own budgets: the same `--max-memory` text reaches
// every rank (a launcher gives all ranks one command line), so an entry keyed `rankN:DEVICE`
// tells rank N alone what DEVICE holds, and replaces the plain entry for that device on that
// rank only. The text a rank plans with is plain again (budget_text_for_rank), so one parser,
// get_max_memory, reads every budget. Only the rank keys are checked here; a plain entry's device
// and every size are get_max_memory's. `ferry plan --world-size N` asks budget_text_for_rank for
// each rank, a rank of `ferry run`/`serve` for its own (PlacementFlags::rank), so the split shown
// and the split run use the same budgets.

namespace {

constexpr std::string_view kRankPrefix = "rank";
constexpr std::string_view kRankForm =
    "rankN:DEVICE=SIZE, N a rank (0, 1, ...) and DEVICE a GPU index, cpu or disk";

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "0", "cpu", "disk" as get_max_memory reads them ("007" is GPU 7); other keys stay as written.
std::string canonical_device(std::string_view key) {
  if (all_digits(key) && key.size() <= 9) return std::to_string(std::stoi(std::string(key)));
  return std::string(key);
}

std::string entry_text(const BudgetEntry& e) { return fmt::format("{}={}", e.device, e.size); }

[[noreturn]] void reject(const BudgetEntry& e, std::string_view problem) {
  throw InvalidArgument(
      fmt::format("max_memory entry '{}': {}; expected {}", entry_text(e), problem, kRankForm),
      ErrorFields{.path = e.device, .expected = std::string(kRankForm), .actual = entry_text(e)});
}

// One entry keyed `rankN:DEVICE`.
struct RankEntry {
  int rank = 0;
  std::string device;  // as written after the colon ("0", "cpu")
  std::string size;
};

RankEntry parse_rank_entry(const BudgetEntry& e) {
  const std::string_view rest = std::string_view(e.device).substr(kRankPrefix.size());
  const std::size_t colon = rest.find(':');
  if (colon == std::string_view::npos) reject(e, "a rank key needs ':' before the device");
  const std::string_view number = rest.substr(0, colon);
  const std::string_view device = rest.substr(colon + 1);
  if (number.empty()) reject(e, "the rank number is missing");
  if (number.front() == '-' && all_digits(number.substr(1))) {
    reject(e, fmt::format("rank {} is negative", number));
  }
  if (!all_digits(number) || number.size() > 9) {
    reject(e, fmt::format("'{}' is not a rank number", number));
  }
  if (device != "cpu" && device != "disk" && !(all_digits(device) && device.size() <= 9)) {
    reject(e, fmt::format("'{}' is not a device", device));
  }
  return {.rank = std::stoi(std::string(number)), .device = std::string(device), .size = e.size};
}

// Every entry of `text`, rank entries parsed and checked (a device given twice for one rank is
// refused here: the rank's text would name it twice, and get_max_memory could not say which
// rank); plain entries as they are.
struct SplitEntries {
  std::vector<BudgetEntry> plain;
  std::vector<std::pair<RankEntry, BudgetEntry>> ranked;  // parsed, as written
};

SplitEntries split_entries(std::string_view text) {
  SplitEntries out;
  std::map<std::pair<int, std::string>, std::string> seen;  // (rank, device) → entry
  for (BudgetEntry& e : parse_budget_entries(text)) {
    if (!is_rank_key(e.device)) {
      out.plain.push_back(std::move(e));
      continue;
    }
    RankEntry r = parse_rank_entry(e);
    const auto [it, fresh] =
        seen.emplace(std::pair(r.rank, canonical_device(r.device)), entry_text(e));
    if (!fresh) {
      throw InvalidArgument(
          fmt::format("max_memory entries '{}' and '{}': rank {} gives device {} twice; expected "
                      "one budget per device and rank",
                      it->second, entry_text(e), r.rank, r.device),
          ErrorFields{.path = e.device,
                      .expected = "one budget per device and rank",
                      .actual = fmt::format("{} and {}", it->second, entry_text(e))});
    }
    out.ranked.emplace_back(std::move(r), std::move(e));
  }
  return out;
}

}  // namespace

bool is_rank_key(std::string_view key) { return key.substr(0, kRankPrefix.size()) == kRankPrefix; }

void check_rank_budgets(std::string_view text, std::optional<int> world_size) {
  for (const auto& [r, e] : split_entries(text).ranked) {
    if (world_size && r.rank >= *world_size) {
      throw InvalidArgument(
          fmt::format("max_memory entry '{}': rank {} is not in a world of {} rank(s) (ranks 0 "
                      "to {})",
                      entry_text(e), r.rank, *world_size, *world_size - 1),
          ErrorFields{.path = e.device,
                      .expected = fmt::format("a rank below {}", *world_size),
                      .actual = std::to_string(r.rank)});
    }
  }
}

std::string budget_text_for_rank(std::string_view text, int rank) {
  FERRY_ASSERT(rank >= 0, "budget_text_for_rank: rank {}", rank);
  const SplitEntries entries = split_entries(text);
  std::vector<const RankEntry*> mine;
  for (const auto& [r, e] : entries.ranked) {
    if (r.rank == rank) mine.push_back(&r);
  }
  std::vector<BudgetEntry> out;
  std::vector<bool> used(mine.size(), false);
  for (const BudgetEntry& e : entries.plain) {
    const std::string device = canonical_device(e.device);
    const auto own = std::find_if(mine.begin(), mine.end(), [&](const RankEntry* r) {
      return canonical_device(r->device) == device;
    });
    if (own == mine.end()) {
      out.push_back(e);
      continue;
    }
    // The rank's entry takes the place of the (first) plain entry for its device.
    const auto i = static_cast<std::size_t>(own - mine.begin());
    if (!used[i]) out.push_back({(*own)->device, (*own)->size});
    used[i] = true;
  }
  for (std::size_t i = 0; i < mine.size(); ++i) {
    if (!used[i]) out.push_back({mine[i]->device, mine[i]->size});
  }
  std::string joined;
  for (const BudgetEntry& e : out) {
    joined += fmt::format("{}{}", joined.empty() ? "" : ",", entry_text(e));
  }
  return joined;
}

}  // namespace ferry::plan
