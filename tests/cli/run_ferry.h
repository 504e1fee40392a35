#pragma once
// Runs the ferry binary (FERRY_CLI_PATH) as a process, for the CLI tests.

#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace ferry::cli::testing {

struct Result {
  int exit_code;
  std::string out;  // stdout and stderr
};

// Runs `PREFIX ferry ARGS REDIRECT` through the shell.
inline Result run_ferry_redirected(const std::string& args, const char* redirect,
                                   const std::string& prefix = "") {
  const std::string command = prefix + std::string(FERRY_CLI_PATH) + " " + args + " " + redirect;
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

inline Result run_ferry(const std::string& args) { return run_ferry_redirected(args, "2>&1"); }

// Only stderr (stdout discarded).
inline Result run_ferry_stderr(const std::string& args) {
  return run_ferry_redirected(args, "2>&1 >/dev/null");
}

// Runs `ferry ARGS REDIRECT` killed after `seconds` (for inputs that must not make ferry wait,
// such as a FIFO): a hang is exit code 124, not a stuck test.
inline Result run_ferry_bounded(int seconds, const std::string& args, const char* redirect) {
  return run_ferry_redirected(args, redirect, "timeout " + std::to_string(seconds) + " ");
}

// Only stdout (for --json output, which must parse on its own; warnings go to stderr).
inline Result run_ferry_stdout(const std::string& args) {
  return run_ferry_redirected(args, "2>/dev/null");
}

}  // namespace ferry::cli::testing
