// `ferry plan CHECKPOINT`: where each layer of a checkpoint would rest under given budgets, and
// whether it fits — from the headers alone, no weights read.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "cli/commands.h"
#include "ferry/core/bytes.h"
#include "ferry/core/dtype.h"
#include "ferry/io/checkpoint.h"
#include "ferry/plan/estimate.h"
#include "ferry/plan/strategy.h"

namespace ferry::cli {
namespace {

struct PlanCommandOptions {
  std::string checkpoint;
  std::string max_memory;             // "0=20GiB,cpu=64GiB"; empty: probed
  std::string dtype;                  // weights converted to this when loaded
  std::string strategy = "auto";      // auto | balanced | balanced_low_0 | sequential
  std::vector<std::string> no_split;  // module path globs; empty: inferred numbered blocks
  std::string reserve;                // "0=2GiB" or a bare size for every device
  bool json = false;
};

std::vector<TensorInfo> read_tensor_infos(const std::string& checkpoint) {
  const auto source = io::open_checkpoint(checkpoint);
  std::vector<TensorInfo> infos;
  infos.reserve(source->names().size());
  for (const std::string& name : source->names()) infos.push_back(source->info(name));
  return infos;
}

// "--reserve 2GiB" applies to every budgeted device; "--reserve 0=2GiB,cpu=8GiB" per device.
plan::MemoryBudget parse_reserve(const std::string& text, const plan::MemoryBudget& budget) {
  if (text.empty()) return {};
  if (text.find('=') != std::string::npos) {
    return plan::get_max_memory(plan::parse_budget_entries(text), /*gpu_count=*/1 << 30);
  }
  plan::MemoryBudget reserve;
  const Bytes each = Bytes::parse(text);
  for (const auto& [p, b] : budget.entries()) reserve.set(p, each);
  return reserve;
}

// Map entries in model order, with runs of numbered siblings on one placement collapsed:
// "model.layers.0-31".
std::vector<std::pair<std::string, Placement>> compact_entries(const plan::ModuleTree& tree,
                                                               const plan::DeviceMap& map) {
  auto entries = map.entries();
  std::stable_sort(entries.begin(), entries.end(), [&](const auto& a, const auto& b) {
    return tree.find(a.first).value_or(0) < tree.find(b.first).value_or(0);
  });
  std::vector<std::pair<std::string, Placement>> out;
  auto split_number = [](const std::string& name) -> std::pair<std::string, long> {
    const std::size_t dot = name.rfind('.');
    const std::string last = dot == std::string::npos ? name : name.substr(dot + 1);
    if (last.empty() || !std::all_of(last.begin(), last.end(), ::isdigit) || last.size() > 9) {
      return {"", -1};
    }
    return {dot == std::string::npos ? "" : name.substr(0, dot + 1), std::stol(last)};
  };
  for (std::size_t i = 0; i < entries.size();) {
    const auto [prefix, first] = split_number(entries[i].first);
    std::size_t j = i + 1;
    long last = first;
    while (first >= 0 && j < entries.size() && entries[j].second == entries[i].second) {
      const auto [p, n] = split_number(entries[j].first);
      if (p != prefix || n != last + 1) break;
      last = n;
      ++j;
    }
    out.emplace_back(j - i > 1 ? fmt::format("{}{}-{}", prefix, first, last) : entries[i].first,
                     entries[i].second);
    i = j;
  }
  return out;
}

int run_plan(const PlanCommandOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<TensorInfo> infos = read_tensor_infos(o.checkpoint);
  const plan::ModuleTree tree = plan::ModuleTree::from_tensors(infos);
  const std::vector<std::string> no_split =
      o.no_split.empty() ? plan::infer_no_split_patterns(tree) : o.no_split;
  plan::PlanOptions options{.no_split_patterns = no_split};
  if (!o.dtype.empty()) options.dtype = parse_dtype(o.dtype);

  plan::StrategyOptions strategy{.strategy = plan::parse_strategy(o.strategy)};
  if (!o.max_memory.empty()) {
    strategy.max_memory = plan::get_max_memory(plan::parse_budget_entries(o.max_memory));
  }
  const plan::MemoryBudget base =
      strategy.max_memory ? *strategy.max_memory : plan::get_max_memory();
  strategy.reserve = parse_reserve(o.reserve, base);
  const plan::StrategyPlan result = plan::plan_with_strategy(tree, strategy, options);
  const auto estimates = plan::estimate_memory(tree, {.patterns = no_split});
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  const plan::DevicePlan& p = result.plan;
  std::uint64_t total_bytes = 0;
  for (const auto& d : p.devices) total_bytes += d.used_bytes();
  const std::uint64_t disk_bytes = p.disk_bytes();

  if (o.json) {
    nlohmann::ordered_json j;
    j["checkpoint"] = o.checkpoint;
    j["strategy"] = std::string(plan::to_string(strategy.strategy));
    j["no_split"] = no_split;
    j["device_map"] = nlohmann::ordered_json::parse(p.device_map.to_json());
    nlohmann::ordered_json devices = nlohmann::ordered_json::object();
    for (const auto& d : p.devices) {
      nlohmann::ordered_json e;
      if (d.budget_bytes) {
        e["budget_bytes"] = result.budget.find(d.placement).value_or(Bytes(0)).value();
        e["reserve_bytes"] = strategy.reserve.find(d.placement).value_or(Bytes(0)).value();
        e["planning_budget_bytes"] = d.budget_bytes->value();
      } else {
        e["budget_bytes"] = nullptr;
      }
      e["used_bytes"] = d.used_bytes();
      devices[d.placement.to_string()] = e;
    }
    j["devices"] = devices;
    j["total_bytes"] = total_bytes;
    j["disk_bytes"] = disk_bytes;
    j["fits_without_disk"] = disk_bytes == 0;
    nlohmann::ordered_json est = nlohmann::ordered_json::array();
    for (const auto& e : estimates) {
      est.push_back({{"dtype", e.dtype},
                     {"largest_layer_bytes", e.largest_layer_bytes},
                     {"total_bytes", e.total_bytes}});
    }
    j["estimate"] = est;
    j["plan_ms"] = elapsed_ms;
    fmt::print("{}\n", j.dump(2));
    return 0;
  }

  fmt::print("ferry plan: {} ({} tensors, {}; planned in {:.1f} ms)\n", o.checkpoint, infos.size(),
             format_bytes(total_bytes), elapsed_ms);
  fmt::print(
      "  strategy {}; never split: {}\n\nDevice map:\n", plan::to_string(strategy.strategy),
      no_split.empty() ? std::string("(nothing)") : fmt::format("{}", fmt::join(no_split, ", ")));
  const auto rows = compact_entries(tree, p.device_map);
  std::size_t width = 0;
  for (const auto& [name, placement] : rows) width = std::max(width, name.size());
  for (const auto& [name, placement] : rows) {
    fmt::print("  {:<{}} → {}\n", name.empty() ? "(whole model)" : name, width,
               placement.to_string());
  }
  fmt::print("\nDevices:\n  {:<6} {:>12} {:>12} {:>12} {:>12}\n", "device", "budget", "reserve",
             "used", "headroom");
  for (const auto& d : p.devices) {
    if (!d.budget_bytes) {
      fmt::print("  {:<6} {:>12} {:>12} {:>12} {:>12}\n", "disk", "-", "-",
                 format_bytes(d.used_bytes()), "-");
      continue;
    }
    const std::uint64_t budget = result.budget.find(d.placement).value_or(Bytes(0)).value();
    const std::uint64_t reserve = strategy.reserve.find(d.placement).value_or(Bytes(0)).value();
    const std::uint64_t taken = reserve + d.used_bytes();
    fmt::print("  {:<6} {:>12} {:>12} {:>12} {:>12}\n", d.placement.to_string(),
               format_bytes(budget), format_bytes(reserve), format_bytes(d.used_bytes()),
               budget >= taken ? format_bytes(budget - taken) : "-" + format_bytes(taken - budget));
  }
  if (disk_bytes > 0) {
    fmt::print(
        "\nThe model does not fit in the given memory: {} of its {} of weights go to disk.\n",
        format_bytes(disk_bytes), format_bytes(total_bytes));
  } else {
    fmt::print("\nThe model fits in memory: nothing goes to disk.\n");
  }
  for (const auto& [placement, bits] : p.min_required_bits) {
    fmt::print(
        "  {} got nothing: its first module needed {} (with the room kept for the largest "
        "layer).\n",
        placement.to_string(), format_bytes((bits + 7) / 8));
  }
  fmt::print("\n{}", plan::format_estimate_table(
                         std::filesystem::path(o.checkpoint).filename().string(), estimates));
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& app, Runner& runner) {
  auto options = std::make_shared<PlanCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "Show where each layer of a checkpoint would rest and whether it fits (headers only)");
  cmd->add_option("checkpoint", options->checkpoint,
                  "safetensors file, sharded index, or folder holding either")
      ->required();
  cmd->add_option("--max-memory", options->max_memory,
                  "Budgets per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB (default: probed)");
  cmd->add_option("--dtype", options->dtype, "Dtype the weights are loaded as (float16, ...)");
  cmd->add_option("--strategy", options->strategy, "auto|balanced|balanced_low_0|sequential")
      ->capture_default_str();
  cmd->add_option("--no-split", options->no_split,
                  "Module path pattern never split across devices (repeatable; default: the "
                  "repeated numbered blocks, e.g. model.layers.*)");
  cmd->add_option("--reserve", options->reserve,
                  "Memory kept free for activations and KV cache: a size for every device, or "
                  "0=2GiB,cpu=4GiB");
  cmd->add_flag("--json", options->json, "Print one JSON object (device_map, devices, ...)");
  cmd->callback([options, &runner] { runner = [options] { return run_plan(*options); }; });
}

}  // namespace ferry::cli
