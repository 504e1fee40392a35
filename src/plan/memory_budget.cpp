#include "ferry/plan/memory_budget.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <map>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/core/memory.h"

namespace ferry::plan {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<int> parse_index(std::string_view key) {
  int value = 0;
  auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), value);
  if (key.empty() || ec != std::errc() || end != key.data() + key.size()) return std::nullopt;
  return value;
}

std::string available_list(int n) {
  std::string out = "[";
  for (int i = 0; i < n; ++i) out += fmt::format("{}{}", i ? ", " : "", i);
  return out + "]";
}

}  // namespace

void MemoryBudget::set(Placement placement, Bytes budget) {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), placement,
                             [](const auto& e, Placement p) { return e.first < p; });
  if (it != entries_.end() && it->first == placement) {
    it->second = budget;
  } else {
    entries_.insert(it, {placement, budget});
  }
}

std::optional<Bytes> MemoryBudget::find(Placement placement) const {
  for (const auto& [p, b] : entries_) {
    if (p == placement) return b;
  }
  return std::nullopt;
}

Bytes MemoryBudget::at(Placement placement) const {
  const auto found = find(placement);
  FERRY_CHECK(found.has_value(), InvalidArgument, "no memory budget for device {}",
              placement.to_string());
  return *found;
}

std::vector<Placement> MemoryBudget::gpus() const {
  std::vector<Placement> out;
  for (const auto& [p, b] : entries_) {
    if (p.is_gpu()) out.push_back(p);
  }
  return out;
}

std::string MemoryBudget::to_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [p, b] : entries_) j[p.to_string()] = b.value();
  return j.dump();
}

MemoryBudget MemoryBudget::from_json(std::string_view json) {
  nlohmann::ordered_json parsed;
  try {
    parsed = nlohmann::ordered_json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(fmt::format("max_memory: invalid JSON: {}", e.what()));
  }
  FERRY_CHECK(parsed.is_object(), InvalidArgument, "max_memory: expected a JSON object");
  std::vector<BudgetEntry> entries;
  for (const auto& [key, value] : parsed.items()) {
    if (value.is_string()) {
      entries.push_back({key, value.get<std::string>()});
    } else if (value.is_number_unsigned()) {
      entries.push_back({key, std::to_string(value.get<std::uint64_t>())});
    } else {
      entries.push_back({key, value.dump()});  // rejected by Bytes::parse with its message
    }
  }
  return get_max_memory(entries, /*gpu_count=*/1 << 30);
}

std::string MemoryBudget::to_string() const {
  std::string out;
  for (const auto& [p, b] : entries_) {
    out += fmt::format("{}{}={}", out.empty() ? "" : ",", p.to_string(), b.value());
  }
  return out;
}

MemoryBudget get_max_memory() {
  MemoryBudget budget;
  for (const GpuMemory& gpu : probe_gpus()) budget.set(Placement::gpu(gpu.index), gpu.free);
  budget.set(Placement::cpu(), available_ram());
  return budget;
}

MemoryBudget get_max_memory(std::span<const BudgetEntry> max_memory, std::optional<int> gpu_count) {
  // Keys are checked before sizes are parsed, as Accelerate does not; either order reports the
  // first problem, and a wrong key is the likelier mistake.
  std::map<std::string, std::string, std::less<>> seen;  // canonical key → size
  for (const BudgetEntry& e : max_memory) {
    const std::string_view key = trim(e.device);
    if (const auto index = parse_index(key); index && *index < 0) {
      throw InvalidArgument(
          fmt::format("Device {} is not recognized: a GPU index is 0 or more", key),
          ErrorFields{.path = std::string(key),
                      .expected = "a GPU index (0, 1, ...), 'cpu' or 'disk'",
                      .actual = std::string(key)});
    }
    if (key == "cpu" || key == "disk" || parse_index(key)) {
      const std::string canonical =
          parse_index(key) ? std::to_string(*parse_index(key)) : std::string(key);
      if (auto [it, fresh] = seen.emplace(canonical, std::string(trim(e.size))); !fresh) {
        throw InvalidArgument(
            fmt::format("max_memory: device {} is given twice ({} and {}): expected one budget "
                        "per device",
                        canonical, it->second, trim(e.size)),
            ErrorFields{.path = canonical,
                        .expected = "one budget per device",
                        .actual = fmt::format("{} and {}", it->second, trim(e.size))});
      }
      continue;
    }
    if (key == "mps") throw Unsupported("Device mps (Apple GPUs) is not supported by ferry");
    throw InvalidArgument(
        fmt::format("Device {} is not recognized, available devices are integers(for GPU/XPU), "
                    "'mps', 'cpu' and 'disk'",
                    key),
        ErrorFields{.path = std::string(key),
                    .expected = "a GPU index, 'cpu' or 'disk'",
                    .actual = std::string(key)});
  }
  const int n_gpus = gpu_count ? *gpu_count : static_cast<int>(probe_gpus().size());
  MemoryBudget budget;
  for (const BudgetEntry& e : max_memory) {
    const std::string_view key = trim(e.device);
    const Bytes size = Bytes::parse(trim(e.size));
    if (const auto index = parse_index(key)) {
      if (*index >= n_gpus || *index < 0) {
        log_warning("Device {} is not available, available devices are {}", *index,
                    available_list(n_gpus));
      }
      budget.set(Placement::gpu(*index), size);
    } else {
      budget.set(key == "cpu" ? Placement::cpu() : Placement::disk(), size);
    }
  }
  return budget;
}

std::vector<BudgetEntry> parse_budget_entries(std::string_view text) {
  std::vector<BudgetEntry> out;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    FERRY_CHECK(eq != std::string_view::npos, InvalidArgument,
                "invalid memory budget '{}': expected DEVICE=SIZE, e.g. 0=20GiB or cpu=64GiB",
                item);
    out.push_back({std::string(trim(item.substr(0, eq))), std::string(trim(item.substr(eq + 1)))});
  }
  return out;
}

MemoryBudget MemoryBudget::parse(std::string_view text, std::optional<int> gpu_count) {
  return get_max_memory(parse_budget_entries(text), gpu_count);
}

MemoryBudget subtract_reserve(const MemoryBudget& budget, const MemoryBudget& reserve) {
  MemoryBudget out;
  for (const auto& [p, b] : budget.entries()) {
    const std::uint64_t keep = reserve.find(p).value_or(Bytes(0)).value();
    out.set(p, Bytes(b.value() > keep ? b.value() - keep : 0));
  }
  return out;
}

}  // namespace ferry::plan
