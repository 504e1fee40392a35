// The part of main both programs share (Note [Front end and engine]): parsing, and the only
// place where errors become exit codes.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cli/commands.h"
#include "cli/json_output.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"

namespace ferry::cli {
namespace {

// CLI11 2.1 lists unexpected arguments in reverse; ferry collects them itself (every command
// allows extras) and reports them in the order given.
// A `--` is no extra: it ends the options (CLI11 keeps it among the extras), and what follows
// goes to the command's positionals (`ferry launch --nproc 2 -- run MODEL`).
void reject_extras(const CLI::App& app) {
  std::vector<std::string> extras = app.remaining(/*recurse=*/true);
  std::erase(extras, std::string("--"));
  if (extras.empty()) return;
  // ExtrasError joins its list back to front: hand it reversed to print it front to back.
  throw CLI::ExtrasError(std::vector<std::string>(extras.rbegin(), extras.rend()));
}

// A failure as the user sees it: JSON on stdout under --json (docs/cli.md), else one line on
// stderr.
int report(const std::exception& e, int exit_code, bool json, std::string_view prefix) {
  if (json) {
    print_json(error_json(e, exit_code));
  } else {
    fmt::print(stderr, "ferry: {}{}\n", prefix, e.what());
  }
  return exit_code;
}

}  // namespace

void add_global_flags(CLI::App& app, AppFlags& flags) {
  app.name("ferry");
  app.description("ferry: run neural networks too big for the memory at hand");
  app.require_subcommand(1);
  app.set_version_flag("--version", "ferry 0.1.0");
  app.add_flag("-v,--verbose", flags.verbose, "Log placement decisions (info level)");
}

int run_app(CLI::App& app, Runner& runner, const AppFlags& flags, int argc, char** argv) {
  app.allow_extras();
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    sub->allow_extras();
  }
  // Every command takes --json; a command line CLI11 rejects is answered in JSON too when it
  // asked for it.
  const bool json = wants_json(argc, argv);
  try {
    app.parse(argc, argv);
    reject_extras(app);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0: printed as CLI11 prints them.
    if (!json || e.get_exit_code() == 0) return app.exit(e);
    return report(e, e.get_exit_code(), json, "");
  }
  if (flags.verbose) set_log_level(LogLevel::kInfo);
  return run_command(runner, json);
}

bool wants_json(int argc, char** argv) {
  return std::any_of(argv + 1, argv + argc,
                     [](const char* a) { return std::strcmp(a, "--json") == 0; });
}

int run_command(const Runner& runner, bool json) {
  try {
    return runner ? runner() : 0;
  } catch (const Error& e) {
    return report(e, 1, json, "error: ");
  } catch (const std::filesystem::filesystem_error& e) {
    // A file-system failure the library did not wrap (an unwritable or vanished folder): the
    // user's environment, not a bug, so it is reported like ferry's own I/O errors.
    return report(e, 1, json, "error: ");
  } catch (const std::exception& e) {
    return report(e, 2, json, "unexpected error: ");
  }
}

}  // namespace ferry::cli
