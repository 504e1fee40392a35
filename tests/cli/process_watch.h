#pragma once
// Watching ferry processes with deadlines: a process that outlives its bound is a failure, not a
// stuck test; and what is left among this process's children once they should all be gone.

#include <chrono>
#include <filesystem>
#include <fstream>
#include <signal.h>
#include <string>
#include <sys/prctl.h>
#include <sys/types.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "spawn_ferry.h"

namespace ferry::cli::testing {

using Clock = std::chrono::steady_clock;

// Waits until `p` has ended, at most `limit`; false when it still runs.
inline bool wait_for_exit(FerryProcess& p, std::chrono::milliseconds limit) {
  const auto until = Clock::now() + limit;
  while (p.running()) {
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Makes this process the reaper of its descendants' orphans: a rank its launcher left behind
// becomes this process's child, visible to children_of_this_process().
inline void adopt_orphans() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

// Every process (running or zombie) whose parent is this process.
inline std::vector<pid_t> children_of_this_process() {
  std::vector<pid_t> children;
  const pid_t self = ::getpid();
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
    const std::size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == self) {
      children.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return children;
}

inline bool process_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

}  // namespace ferry::cli::testing
