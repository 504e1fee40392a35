// The ferry command-line tool: the only place where errors become exit codes.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <malloc.h>

#include "cli/commands.h"
#include "cli/json_output.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"

namespace {

// CLI11 2.1 lists unexpected arguments in reverse; ferry collects them itself (every command
// allows extras) and reports them in the order given.
void reject_extras(const CLI::App& app) {
  const std::vector<std::string> extras = app.remaining(/*recurse=*/true);
  if (extras.empty()) return;
  // ExtrasError joins its list back to front: hand it reversed to print it front to back.
  throw CLI::ExtrasError(std::vector<std::string>(extras.rbegin(), extras.rend()));
}

// A failure as the user sees it: JSON on stdout under --json (docs/cli.md), else one line on
// stderr.
int report(const std::exception& e, int exit_code, bool json, std::string_view prefix) {
  if (json) {
    ferry::cli::print_json(ferry::cli::error_json(e, exit_code));
  } else {
    fmt::print(stderr, "ferry: {}{}\n", prefix, e.what());
  }
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  // Note [Freed memory goes back]
  // glibc raises its mmap threshold after a large block is freed, so later large blocks (the
  // read buffers of a --dtype conversion, prefill activations) come from the heap and stay in
  // the resident set after they are freed: 30 % above the CPU budget on the 1 GB demo. A fixed
  // threshold keeps blocks of 1 MiB or more in their own mappings, returned to the system when
  // freed, so the measured peak follows what ferry holds. The environment's own setting wins.
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
  }
  CLI::App app{"ferry: run neural networks too big for the memory at hand"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ferry 0.1.0");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log placement decisions (info level)");

  ferry::cli::Runner runner;
  ferry::cli::add_demo_command(app, runner);
  ferry::cli::add_inspect_command(app, runner);
  ferry::cli::add_plan_command(app, runner);
  ferry::cli::add_make_model_command(app, runner);
  ferry::cli::add_run_command(app, runner);
  app.allow_extras();
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    sub->allow_extras();
  }

  // Every command takes --json; a command line CLI11 rejects is answered in JSON too when it
  // asked for it.
  const bool json = std::any_of(argv + 1, argv + argc,
                                [](const char* a) { return std::strcmp(a, "--json") == 0; });
  try {
    app.parse(argc, argv);
    reject_extras(app);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0: printed as CLI11 prints them.
    if (!json || e.get_exit_code() == 0) return app.exit(e);
    return report(e, e.get_exit_code(), json, "");
  }
  if (verbose) ferry::set_log_level(ferry::LogLevel::kInfo);
  try {
    return runner ? runner() : 0;
  } catch (const ferry::Error& e) {
    return report(e, 1, json, "error: ");
  } catch (const std::filesystem::filesystem_error& e) {
    // A file-system failure the library did not wrap (an unwritable or vanished folder): the
    // user's environment, not a bug, so it is reported like ferry's own I/O errors.
    return report(e, 1, json, "error: ");
  } catch (const std::exception& e) {
    return report(e, 2, json, "unexpected error: ");
  }
}
