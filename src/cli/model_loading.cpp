#include "cli/model_loading.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <sched.h>
#include <thread>
#include <vector>

#include "cli/progress_bar.h"
#include "cli/run_report.h"
#include "ferry/core/bytes.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"

namespace ferry::cli {
namespace {

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1U, std::thread::hardware_concurrency());
}

// Compute threads: at most the CPUs this process may use (more only oversubscribes them).
int compute_threads(int requested) {
  const int usable = usable_cpus();
  if (requested == 0) return usable;
  if (requested > usable) {
    log_warning("--threads {}: only {} CPU(s) are usable by this process; using {}", requested,
                usable, usable);
    return usable;
  }
  return requested;
}

}  // namespace

ComputeSetup set_up_compute(int requested_threads) {
  ComputeSetup setup{.threads = compute_threads(requested_threads), .blas = blas_in_use()};
  at::set_num_threads(setup.threads);
  if (setup.blas.starts_with("reference"))
    log_warning(
        "LibTorch runs on the reference BLAS (about 30x slower than OpenBLAS): install "
        "libopenblas0-openmp");
  return setup;
}

models::LoadedModel load_model_with_progress(const std::filesystem::path& folder,
                                             models::LoadModelOptions load, bool progress) {
  // The bar goes to stderr, and only to a terminal: piped output and --json stay clean.
  std::optional<LoadProgressBar> bar;
  if (progress && is_terminal(stderr)) {
    bar.emplace(stderr);
    load.dispatch.progress = [&bar](const dispatch::LoadProgress& p) { bar->update(p); };
  }
  return models::load_model(folder, load);
}

void print_placement(std::FILE* out, const models::LoadedModel& loaded) {
  if (loaded.device_map.empty()) return;
  std::map<std::string, std::vector<std::string>> by_place;
  for (const auto& [path, p] : loaded.device_map.entries()) by_place[p.to_string()].push_back(path);
  for (const auto& [where, paths] : by_place) {
    fmt::print(out, "    {:<5} {} module(s): {}{}\n", where, paths.size(),
               paths.front().empty() ? "(whole model)" : paths.front(),
               paths.size() > 1 ? fmt::format(" ... {}", paths.back()) : "");
  }
  if (!loaded.resolution) return;
  for (const auto& [device, bits] : loaded.resolution->plan.plan.min_required_bits) {
    const Placement p = device;
    fmt::print(
        out,
        "    {} got nothing: its first module needs {} but {} of its {} budget is left "
        "after reserves ({})\n",
        p.to_string(), format_bytes((bits + 7) / 8),
        format_bytes(loaded.resolution->plan.planning_budget.find(p).value_or(Bytes(0)).value()),
        format_bytes(loaded.resolution->budget.find(p).value_or(Bytes(0)).value()),
        reserve_summary(*loaded.resolution, p));
  }
}

void add_compute_flags(CLI::App* cmd, int& threads, bool& no_progress) {
  cmd->add_option("-t,--threads", threads,
                  "CPU threads for compute (default and most: the CPUs this process may use)");
  cmd->add_flag("--no-progress", no_progress,
                "No progress bar while loading (drawn on stderr when it is a terminal)");
}

std::int64_t resolve_context(const PlacementFlags& flags, const models::ModelConfig& config,
                             std::int64_t cap) {
  const std::int64_t positions = config.max_position_embeddings;
  const std::int64_t context = flags.context > 0 ? flags.context : std::min(positions, cap);
  FERRY_CHECK(context <= positions, InvalidArgument,
              "--context {}: the model has {} positions (config.json max_position_embeddings)",
              context, positions);
  FERRY_CHECK(context >= 2, InvalidArgument,
              "--context {}: expected at least 2 tokens (a prompt token and a generated one)",
              context);
  return context;
}

}  // namespace ferry::cli
