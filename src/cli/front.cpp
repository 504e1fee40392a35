// The `ferry` command users run: LibTorch-free, so `--help`, `inspect` and `plan` on headers
// start in milliseconds; every command that computes is handed to ferry-engine (Note [Front end
// and engine] in commands.h).
#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include "cli/commands.h"
#include "cli/plan_command.h"
#include "ferry/core/error.h"

namespace ferry::cli {
namespace {

char** g_argv = nullptr;

// The engine: $FERRY_ENGINE, else ferry-engine beside this program (a build tree), else
// ../libexec/ferry/ferry-engine (an install).
std::filesystem::path engine_path() {
  if (const char* env = std::getenv("FERRY_ENGINE"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  FERRY_CHECK(!ec, IoError, "cannot find ferry's own program (/proc/self/exe): {}", ec.message());
  const std::filesystem::path dir = self.parent_path();
  const std::array<std::filesystem::path, 2> candidates{
      dir / "ferry-engine", dir.parent_path() / "libexec" / "ferry" / "ferry-engine"};
  for (const auto& candidate : candidates) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw IoError(
      fmt::format("ferry's engine is not installed: expected an executable "
                  "ferry-engine at {} or {} (or FERRY_ENGINE naming one)",
                  candidates[0].string(), candidates[1].string()),
      ErrorFields{
          .file = candidates[0].string(), .expected = "ferry-engine", .actual = "no such program"});
}

// The subcommand of the command line: its first argument that is not an option (the global
// options take no value).
std::string_view command_of(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] != '-') return argv[i];
  }
  return {};
}

bool runs_in_engine(std::string_view command) {
  if (command == "run" || command == "chat" || command == "serve" || command == "demo" ||
      command == "make-model" || command == "dist-check") {
    return true;
  }
  // Under a launcher, the engine reads the launcher's variables (plan_command.h: launched_rank).
  if (command == "plan" && std::getenv("WORLD_SIZE") != nullptr) return true;
#ifdef FERRY_WITH_CUDA
  // Only LibTorch can see CUDA devices: a CUDA build plans (probing GPUs) in the engine.
  if (command == "plan") return true;
#endif
  return false;
}

// Note [Threads that wait without spinning]
// The engine's kernels run on OpenMP threads, which by default (libgomp) spin for about 300,000
// iterations after a parallel region before they sleep. When weights stream, the reader threads
// copying the next block need those cores: perf of a page-cache-warm disk-offloaded decode on 2
// cores showed 30 % of the samples in libgomp's spin, beside 24 % in the copy (`--io auto`).
// With GOMP_SPINCOUNT=10000 that decode ran ~20 % faster (217-235 -> 178-184 ms/token) and the
// all-in-RAM decode, fp32 and int8, did not change beyond noise (35-46 ms either way, 5 runs
// alternated). libgomp reads the variable once, when it is loaded, so the front end sets it for
// the engine it starts, unless the user chose GOMP_SPINCOUNT or OMP_WAIT_POLICY.
void set_omp_spin() {
  if (std::getenv("GOMP_SPINCOUNT") == nullptr && std::getenv("OMP_WAIT_POLICY") == nullptr) {
    ::setenv("GOMP_SPINCOUNT", "10000", 0);
  }
}

}  // namespace

void exec_engine() {
  const std::filesystem::path engine = engine_path();
  set_omp_spin();
  ::execv(engine.c_str(), g_argv);
  throw IoError(
      fmt::format("cannot start ferry's engine {}: {}", engine.string(), std::strerror(errno)),
      ErrorFields{.file = engine.string()});
}

// A model folder is built on meta to be planned: the engine's work.
int plan_model_folder(const PlanCommandOptions&) { exec_engine(); }
int plan_model_stages(const PlanCommandOptions&) { exec_engine(); }

// The front end plans only where WORLD_SIZE is unset (runs_in_engine).
std::optional<LaunchedRank> launched_rank() { return std::nullopt; }

}  // namespace ferry::cli

int main(int argc, char** argv) {
  ferry::cli::g_argv = argv;
  if (ferry::cli::runs_in_engine(ferry::cli::command_of(argc, argv))) {
    // Handed over before parsing: the engine parses the same flags (and reports its own errors).
    return ferry::cli::run_command([]() -> int { ferry::cli::exec_engine(); },
                                   ferry::cli::wants_json(argc, argv));
  }
  CLI::App app;
  ferry::cli::AppFlags flags;
  ferry::cli::add_global_flags(app, flags);
  ferry::cli::Runner runner;
  // The engine's commands, listed by --help in the engine's order; handed over if reached.
  auto engine_stub = [&app, &runner](std::string_view name, std::string_view description) {
    CLI::App* cmd = app.add_subcommand(std::string(name), std::string(description));
    cmd->callback([&runner] { runner = []() -> int { ferry::cli::exec_engine(); }; });
  };
  engine_stub("demo", ferry::cli::kDemoDescription);
  ferry::cli::add_inspect_command(app, runner);
  ferry::cli::add_plan_command(app, runner);
  engine_stub("make-model", ferry::cli::kMakeModelDescription);
  engine_stub("run", ferry::cli::kRunDescription);
  engine_stub("chat", ferry::cli::kChatDescription);
  engine_stub("serve", ferry::cli::kServeDescription);
  ferry::cli::add_launch_command(app, runner);
  return ferry::cli::run_app(app, runner, flags, argc, argv);
}
