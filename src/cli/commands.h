#pragma once
// Each `ferry` subcommand registers itself on the app; its callback returns the exit code.
// Only the CLI turns exceptions into exit codes (main.cpp).

#include <CLI/CLI.hpp>

#include <functional>

namespace ferry::cli {

// Set by a subcommand's callback; main returns it.
using Runner = std::function<int()>;

// Adds `ferry demo`.
void add_demo_command(CLI::App& app, Runner& runner);
// Adds `ferry inspect PATH [--json]`.
void add_inspect_command(CLI::App& app, Runner& runner);
// Adds `ferry plan`.
void add_plan_command(CLI::App& app, Runner& runner);
// Adds `ferry make-model`.
void add_make_model_command(CLI::App& app, Runner& runner);
// Adds `ferry run MODEL`.
void add_run_command(CLI::App& app, Runner& runner);

}  // namespace ferry::cli
