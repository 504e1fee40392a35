// `ferry plan CHECKPOINT`: where each layer of a checkpoint would rest under given budgets, and
// whether it fits, no weights read. LibTorch-free: a checkpoint's headers are planned here, a
// model folder by the engine (plan_model.cpp; Note [Front end and engine]).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include "cli/commands.h"
#include "cli/json_output.h"
#include "cli/paths.h"
#include "cli/placement_flags.h"
#include "cli/plan_command.h"
#include "ferry/core/bytes.h"
#include "ferry/core/compute_dtype.h"
#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/io/checkpoint_headers.h"
#include "ferry/plan/estimate.h"
#include "ferry/plan/no_split.h"
#include "ferry/plan/strategy.h"

namespace ferry::cli {
namespace {

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

int run_plan(const PlanCommandOptions& given) {
  PlanCommandOptions o = given;
  const std::string& map = o.placement.device_map;
  FERRY_CHECK(map == "auto" || map == "balanced" || map == "balanced_low_0" || map == "sequential",
              InvalidArgument,
              "ferry plan --device-map {}: expected a strategy to plan with (auto, balanced, "
              "balanced_low_0, sequential); a device or a map file is a plan already",
              map);
  // Under a launcher (`ferry launch --nproc N -- plan ...`) every rank runs this: rank 0 prints
  // the split over the launched world, as `--world-size N` would, and the other ranks print
  // nothing, so the output is one plan, not N copies of a single process's.
  if (!o.world_size) {
    if (const std::optional<LaunchedRank> launched = launched_rank()) {
      if (launched->rank != 0) return 0;
      o.world_size = launched->world_size;
    }
  }
  if (o.world_size) {
    FERRY_CHECK(*o.world_size >= 1, InvalidArgument,
                "ferry plan --world-size {}: expected 1 or more ranks", *o.world_size);
    o.placement.world_size = o.world_size;
    // One rank is a single process's plan, with rank 0's budgets (a launcher's WORLD_SIZE=1
    // runs no pipeline either).
    if (*o.world_size == 1) o.placement.rank = 0;
  }
  check_placement_flags(o.placement);
  require_path("plan:", o.checkpoint, PathKind::kAny);
  std::error_code ec;
  const bool model_folder =
      !o.headers_only &&
      std::filesystem::is_regular_file(std::filesystem::path(o.checkpoint) / "config.json", ec);
  // Ranks split the model by its headers (engine::agree_on_pipeline); each rank's part of a
  // model folder is then planned on the model, as the rank plans it.
  if (o.world_size && *o.world_size > 1) {
    return model_folder ? plan_model_stages(o) : plan_stages(o);
  }
  return model_folder ? plan_model_folder(o) : plan_headers(o);
}

}  // namespace

std::vector<TensorInfo> read_tensor_infos(const std::string& checkpoint) {
  io::CheckpointHeaders headers = io::read_checkpoint_headers(checkpoint);
  std::vector<TensorInfo> infos;
  infos.reserve(headers.tensors.size());
  for (io::HeaderTensor& t : headers.tensors) infos.push_back(std::move(t.info));
  return infos;
}

namespace {

// Headers only (no model to build): the dtype floating weights are narrowed to at load, when the
// compute dtype is narrower than some of them (Note [Compute dtype]; planning's min rule then
// counts each in its held dtype), else nullopt: every weight is counted as stored.
std::optional<DType> narrowed_dtype(const std::vector<TensorInfo>& infos,
                                    const ComputeDType& compute) {
  if (compute.automatic) return std::nullopt;
  for (const TensorInfo& info : infos) {
    if (is_floating(info.dtype) && held_dtype(info.dtype, compute.dtype) != info.dtype) {
      return compute.dtype;
    }
  }
  return std::nullopt;
}

// Bytes of weights the plan places anywhere, and on disk.
std::pair<std::uint64_t, std::uint64_t> weight_totals(const plan::DevicePlan& p) {
  std::uint64_t total = 0;
  for (const auto& d : p.devices) total += d.used_bytes();
  return {total, p.disk_bytes()};
}

}  // namespace

nlohmann::ordered_json plan_json(const PlanCommandOptions& o, const PlanView& v, double elapsed_ms,
                                 const std::vector<plan::SizeEstimate>& estimates) {
  const plan::DevicePlan& p = v.resolution.plan.plan;
  const plan::Resolution& r = v.resolution;
  const auto [total_bytes, disk_bytes] = weight_totals(p);
  nlohmann::ordered_json j = json_header("plan");
  j["checkpoint"] = o.checkpoint;
  j["planned_from"] = v.source;
  j["strategy"] = o.placement.device_map;
  j["no_split"] = v.no_split;
  j["compute_dtype"] = v.compute_dtype;
  j["quantize"] = o.placement.quantize.empty() ? "none" : o.placement.quantize;
  j["device_map"] = nlohmann::ordered_json::parse(p.device_map.to_json());
  nlohmann::ordered_json devices = nlohmann::ordered_json::object();
  for (const auto& d : p.devices) {
    nlohmann::ordered_json e;
    if (d.budget_bytes) {
      e["budget_bytes"] = r.budget.find(d.placement).value_or(Bytes(0)).value();
      e["reserve_bytes"] = r.reserved(d.placement);
      nlohmann::ordered_json reserves = nlohmann::ordered_json::object();
      for (const plan::Reserve& reserve : r.reserves) {
        if (reserve.device == d.placement) reserves[reserve.what] = reserve.bytes;
      }
      e["reserves"] = reserves;
      e["planning_budget_bytes"] = d.budget_bytes->value();
    } else {
      e["budget_bytes"] = nullptr;
    }
    e["used_bytes"] = d.used_bytes();
    devices[d.placement.to_string()] = e;
  }
  j["devices"] = devices;
  j["budgets_probed"] = r.probed;
  j["staging"] = {{"host_bytes", r.host_staging_bytes}, {"device_bytes", r.device_staging_bytes}};
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
  return j;
}

void print_plan_text(const PlanCommandOptions& o, const PlanView& v, double elapsed_ms,
                     const std::vector<plan::SizeEstimate>& estimates) {
  const plan::DevicePlan& p = v.resolution.plan.plan;
  const plan::Resolution& r = v.resolution;
  const auto [total_bytes, disk_bytes] = weight_totals(p);

  fmt::print("ferry plan: {}{} ({} tensors, {}; planned from the {} in {:.1f} ms)\n", o.checkpoint,
             v.part.empty() ? "" : ", " + v.part, v.n_tensors, format_bytes(total_bytes), v.source,
             elapsed_ms);
  fmt::print("  computes in {}; weights counted in the dtype they are held in\n", v.compute_dtype);
  fmt::print("  strategy {}; never split: {}\n\nDevice map:\n", o.placement.device_map,
             v.no_split.empty() ? std::string("(nothing)")
                                : fmt::format("{}", fmt::join(v.no_split, ", ")));
  std::vector<std::pair<std::string, Placement>> rows;
  if (v.tree != nullptr) {
    rows = compact_entries(*v.tree, p.device_map);
  } else {
    rows = p.device_map.entries();
  }
  std::size_t width = 0;
  for (const auto& [name, placement] : rows) width = std::max(width, name.size());
  for (const auto& [name, placement] : rows) {
    fmt::print("  {:<{}} → {}\n",
               !name.empty()    ? name
               : v.part.empty() ? "(whole model)"
                                : "(all of it)",
               width, placement.to_string());
  }
  fmt::print("\nDevices{}:\n  {:<6} {:<12} {:>12}\n", r.probed ? " (budgets probed)" : "", "device",
             "", "bytes");
  for (const auto& d : p.devices) {
    const std::string key = d.placement.to_string();
    if (!d.budget_bytes) {
      fmt::print("  {:<6} {:<12} {:>12}\n", key, "weights", format_bytes(d.used_bytes()));
      continue;
    }
    const std::uint64_t budget = r.budget.find(d.placement).value_or(Bytes(0)).value();
    const std::uint64_t taken = r.reserved(d.placement) + d.used_bytes();
    fmt::print("  {:<6} {:<12} {:>12}\n", key, "budget", format_bytes(budget));
    for (const plan::Reserve& reserve : r.reserves) {
      if (reserve.device == d.placement) {
        fmt::print("  {:<6} {:<12} {:>12}\n", "", "- " + reserve.what, format_bytes(reserve.bytes));
      }
    }
    fmt::print("  {:<6} {:<12} {:>12}\n", "", "- weights", format_bytes(d.used_bytes()));
    fmt::print("  {:<6} {:<12} {:>12}\n", "", "= headroom",
               budget >= taken ? format_bytes(budget - taken) : "-" + format_bytes(taken - budget));
  }
  const std::string what = v.part.empty() ? "The model" : fmt::format("The part of {}", v.part);
  if (disk_bytes > 0) {
    fmt::print("\n{} does not fit in the given memory: {} of its {} of weights go to disk.\n", what,
               format_bytes(disk_bytes), format_bytes(total_bytes));
  } else {
    fmt::print("\n{} fits in memory: nothing goes to disk.\n", what);
  }
  for (const auto& [placement, bits] : p.min_required_bits) {
    fmt::print(
        "  {} got nothing: its first module needed {} (with the room kept for the largest "
        "layer), after the reserves above.\n",
        placement.to_string(), format_bytes((bits + 7) / 8));
  }
  if (!estimates.empty()) {
    fmt::print("\n{}", plan::format_estimate_table(
                           std::filesystem::path(o.checkpoint).filename().string(), estimates));
  }
}

int print_plan(const PlanCommandOptions& o, const PlanView& v, double elapsed_ms,
               const std::vector<plan::SizeEstimate>& estimates) {
  if (o.json) {
    print_json(plan_json(o, v, elapsed_ms, estimates));
  } else {
    print_plan_text(o, v, elapsed_ms, estimates);
  }
  return 0;
}

void check_header_flags(const PlanCommandOptions& o) {
  // Which weights are quantized is decided on the model's module tree (its decoder blocks'
  // Linear layers): headers alone do not say.
  FERRY_CHECK(o.placement.quantize.empty(), InvalidArgument,
              "ferry plan --quantize {}: expected a model folder with a config.json of a supported "
              "architecture to plan quantized weights, got {}{}",
              o.placement.quantize, o.checkpoint,
              o.headers_only ? " with --headers-only" : "");
}

HeaderPlanBasis header_plan_basis(const plan::ModuleTree& whole,
                                  const std::vector<TensorInfo>& infos, const PlacementFlags& f) {
  HeaderPlanBasis basis;
  // Without module classes, the repeated numbered blocks are never split (as `run` never splits
  // the decoder layer class), and --no-split adds its names as module path patterns.
  basis.no_split = plan::infer_no_split_patterns(whole);
  for (const std::string& name : f.no_split) {
    if (std::find(basis.no_split.begin(), basis.no_split.end(), name) == basis.no_split.end()) {
      basis.no_split.push_back(name);
    }
  }
  const ComputeDType compute = f.dtype.empty() ? ComputeDType{} : parse_compute_dtype(f.dtype);
  basis.narrowed = narrowed_dtype(infos, compute);
  basis.compute_dtype = compute_dtype_name(compute);
  return basis;
}

HeaderPlan plan_header_tree(std::shared_ptr<const plan::ModuleTree> tree, std::size_t n_tensors,
                            const HeaderPlanBasis& basis, const PlacementFlags& f,
                            const plan::RuntimeOptions& runtime) {
  const auto start = std::chrono::steady_clock::now();
  const std::optional<plan::MemoryBudget> max_memory = max_memory_of(f);
  plan::PlanOptions options{.no_split_patterns = basis.no_split, .dtype = basis.narrowed};
  plan::Resolution resolution = plan::resolve_and_plan(
      *tree,
      plan::ResolveOptions{.strategy = plan::parse_strategy(f.device_map),
                           .max_memory = max_memory,
                           .extra_reserve = reserve_budget(f.reserve, max_memory),
                           .runtime = runtime},
      options);
  HeaderPlan out;
  out.estimates = plan::estimate_memory(*tree, {.patterns = basis.no_split});
  out.view = PlanView{.tree = tree.get(),
                      .resolution = std::move(resolution),
                      .no_split = basis.no_split,
                      .source = "headers",
                      .compute_dtype = basis.compute_dtype,
                      .n_tensors = n_tensors};
  out.tree = std::move(tree);
  out.elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

int plan_headers(const PlanCommandOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  check_header_flags(o);
  const std::vector<TensorInfo> infos = read_tensor_infos(o.checkpoint);
  auto tree = std::make_shared<const plan::ModuleTree>(plan::ModuleTree::from_tensors(infos));
  const HeaderPlanBasis basis = header_plan_basis(*tree, infos, o.placement);
  const HeaderPlan planned = plan_header_tree(std::move(tree), infos.size(), basis, o.placement,
                                              runtime_options(o.placement));
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return print_plan(o, planned.view, elapsed_ms, planned.estimates);
}

void add_plan_command(CLI::App& app, Runner& runner) {
  auto options = std::make_shared<PlanCommandOptions>();
  CLI::App* cmd = app.add_subcommand("plan", std::string(kPlanDescription));
  cmd->add_option("checkpoint", options->checkpoint,
                  "model folder (config.json + safetensors: planned exactly as `ferry run` "
                  "plans it), safetensors file, or sharded index")
      ->required();
  add_placement_flags(cmd, options->placement);
  cmd->add_option("--strategy", options->placement.device_map,
                  "Same as --device-map: auto|balanced|balanced_low_0|sequential");
  cmd->add_option("--batch", options->placement.batch, "Sequences at once (KV cache reserved)");
  cmd->add_option_function<int>(
      "--world-size", [options](const int& n) { options->world_size = n; },
      "Plan a pipeline over N ranks as a distributed run splits it: each rank's layers from "
      "the tensor headers in proportion to its budgets (--max-memory entries "
      "rankK:DEVICE=SIZE for rank K alone), then each rank's own plan");
  cmd->add_flag("--headers-only", options->headers_only,
                "Plan from the tensor headers even when the folder has a config.json");
  cmd->add_flag("--json", options->json,
                "Print one JSON object (device_map, devices, ...; docs/cli.md)");
  cmd->callback([options, &runner] { runner = [options] { return run_plan(*options); }; });
}

}  // namespace ferry::cli
