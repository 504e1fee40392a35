// The ferry command-line tool: the only place where errors become exit codes.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <malloc.h>
#include <filesystem>

#include "cli/commands.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (verbose) ferry::set_log_level(ferry::LogLevel::kInfo);
  try {
    return runner ? runner() : 0;
  } catch (const ferry::Error& e) {
    fmt::print(stderr, "ferry: error: {}\n", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // A file-system failure the library did not wrap (an unwritable or vanished folder): the
    // user's environment, not a bug, so it is reported like ferry's own I/O errors.
    fmt::print(stderr, "ferry: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ferry: unexpected error: {}\n", e.what());
    return 2;
  }
}
