#pragma once
// The rank processes `ferry launch` starts and supervises (Note [Supervising ranks] in
// rank_processes.cpp). No LibTorch: the launcher is part of the front end.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace ferry::cli {

// How a rank ended: its number and waitpid's status.
struct RankExit {
  int rank = 0;
  int status = 0;
};

struct SupervisedRun {
  std::optional<RankExit> first_failure;  // nullopt: every rank exited with status 0
  int signal_forwarded = 0;               // SIGINT/SIGTERM/SIGHUP the launcher received, or 0
};

// Starts `program` with `argv` once per element of `environments` (rank = index; each a list of
// "NAME=value"), forwards SIGINT, SIGTERM and SIGHUP to every rank, stops the others (SIGTERM,
// then SIGKILL after `grace`) when one fails, and returns once every rank has been reaped. With
// `relay_port`, each rank also gets FERRY_PORT_PIPE and the port rank 0 writes to its pipe is
// relayed to the others (Note [A port nobody else can take] in engine/world.cpp).
SupervisedRun run_ranks(const std::string& program, const std::vector<std::string>& argv,
                        const std::vector<std::vector<std::string>>& environments,
                        std::chrono::milliseconds grace, bool relay_port = false);

// "exited with status 3", "was killed by signal 9 (SIGKILL)".
std::string describe_exit(int status);

// The exit code that reports `status` (waitpid's) as a shell does: its own status, or 128 + the
// signal that killed it.
int exit_code_of(int status);

}  // namespace ferry::cli
