#pragma once
// Each `ferry` subcommand registers itself on the app; its callback returns the exit code.
// Only the CLI turns exceptions into exit codes (app.cpp).
//
// Note [Front end and engine]
// `ferry` is two programs behind one command. The front end (front.cpp, linked with ferry_base
// alone, no LibTorch) answers `--help`, `--version`, `inspect` and `plan` on checkpoint headers
// in a few milliseconds, and runs `launch`, which starts the front end again once per rank. Every
// command that needs the tensor engine (`run`, `serve`, `demo`, `make-model`, the hidden
// `dist-check`, `plan` of a model folder, and every command of a CUDA build's `plan`, whose GPUs
// only LibTorch can probe) is handed over whole: the front end execs `ferry-engine` with the
// same arguments, standard streams and environment (exec_engine), and the engine (engine.cpp)
// parses them with the same flag definitions and runs them. The engine is found next to the
// front end (the build tree) or in ../libexec/ferry (an install); FERRY_ENGINE overrides both.

#include <CLI/CLI.hpp>

#include <functional>
#include <string_view>

namespace ferry::cli {

// Set by a subcommand's callback; main returns it.
using Runner = std::function<int()>;

// The commands, with the one-line descriptions both programs show.
inline constexpr std::string_view kDemoDescription =
    "Build a 100B-parameter model on meta and summarise it";
inline constexpr std::string_view kInspectDescription =
    "List a checkpoint's tensors (dtype, shape, size, file) and validate it";
inline constexpr std::string_view kPlanDescription =
    "Show where each layer of a model would rest, what ferry reserves beside it, and whether it "
    "fits (no weight is read)";
inline constexpr std::string_view kMakeModelDescription =
    "Write a synthetic checkpoint folder (random weights)";
inline constexpr std::string_view kRunDescription =
    "Generate text with a checkpoint folder (config.json + safetensors)";
inline constexpr std::string_view kChatDescription =
    "Chat with a checkpoint folder in the terminal (its chat template; answers stream)";
inline constexpr std::string_view kServeDescription =
    "Serve a checkpoint folder over an OpenAI-compatible HTTP API (continuous batching)";
inline constexpr std::string_view kLaunchDescription =
    "Start N ranks of a ferry command on this host and supervise them (torchrun's variables)";
inline constexpr std::string_view kDistCheckDescription =
    "Check a distributed run: join, agree, pass a tensor round the ranks, barrier (diagnostic)";

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
// Adds `ferry chat MODEL`.
void add_chat_command(CLI::App& app, Runner& runner);
// Adds `ferry serve MODEL`.
void add_serve_command(CLI::App& app, Runner& runner);
// Adds `ferry launch --nproc N -- COMMAND...` (the front end's: it runs no tensor code).
void add_launch_command(CLI::App& app, Runner& runner);
// Adds the hidden `ferry dist-check` (the engine's).
void add_dist_check_command(CLI::App& app, Runner& runner);

// The app both programs start from: its name, description, --version and -v/--verbose.
struct AppFlags {
  bool verbose = false;
};
void add_global_flags(CLI::App& app, AppFlags& flags);

// Parses argv on `app` (every command registered), runs the command's runner and turns
// exceptions into exit codes and messages (JSON ones under --json, docs/cli.md).
int run_app(CLI::App& app, Runner& runner, const AppFlags& flags, int argc, char** argv);

// Runs a parsed command's runner, turning exceptions into exit codes and messages.
int run_command(const Runner& runner, bool json);
// Whether the command line asks for JSON output (--json anywhere).
bool wants_json(int argc, char** argv);

// Hands this process's command line to the engine (Note [Front end and engine]). In the engine
// itself there is nothing to hand over: it throws InternalError.
[[noreturn]] void exec_engine();

}  // namespace ferry::cli
