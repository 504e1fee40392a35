#pragma once
// Budgets of the ranks of a distributed run (issue 16), as `--max-memory` gives them: plain
// entries apply to every rank, entries keyed `rankN:DEVICE` to rank N alone (Note [Rank budgets]
// in rank_budgets.cpp). Pure text in, text out: the result is read by parse_budget_entries and
// get_max_memory like any `--max-memory` text.

#include <optional>
#include <string>
#include <string_view>

namespace ferry::plan {

// The budget text rank `rank` (≥ 0) gets from `text`: its plain entries ("cpu=4GiB"), each
// replaced by the rank's own entry for the same device, followed by the rank's entries for other
// devices, all with the `rankN:` prefix removed. "cpu=4GiB,rank1:cpu=8GiB,rank1:0=20GiB" gives
// rank 0 "cpu=4GiB" and rank 1 "cpu=8GiB,0=20GiB". An empty result means the rank has no
// budgets (they are probed). Throws InvalidArgument naming the entry for a malformed rank key
// (check_rank_budgets without a world size).
std::string budget_text_for_rank(std::string_view text, int rank);

// Checks the rank keys of `text`: each is `rankN:DEVICE` with N a rank (0, 1, ...) and DEVICE a
// GPU index, cpu or disk, and a rank gives one device once. With `world_size`, N is also below
// it. Throws InvalidArgument naming the entry and what was expected. Plain entries are left to
// get_max_memory.
void check_rank_budgets(std::string_view text, std::optional<int> world_size = std::nullopt);

// Whether the key of a budget entry (BudgetEntry::device, the text before '=') is a rank key:
// it starts with `rank`, well formed or not.
bool is_rank_key(std::string_view key);

}  // namespace ferry::plan
