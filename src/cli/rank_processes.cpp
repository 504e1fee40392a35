#include "cli/rank_processes.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/core/error.h"

// Note [Supervising ranks]
// `ferry launch` is the parent of every rank and stays single-threaded. Its signal handlers only
// write the signal's number to a pipe (SIGCHLD too), and one loop polls that pipe, forwards what
// it reads and reaps with waitpid(WNOHANG), so no signal is lost between a check and a wait.
// - SIGINT, SIGTERM and SIGHUP are forwarded to every rank still running (a terminal's Ctrl-C
//   also reaches them through the process group; a second SIGINT does no harm). The ranks get
//   `grace` to end before SIGKILL.
// - The first rank that exits with a non-zero status or dies by a signal is the failure
//   reported; the others get SIGTERM at once and SIGKILL after `grace`. Ranks that end after
//   that are not failures of their own: they were stopped.
// - The launcher returns only when every rank has been reaped, so it leaves no zombie and no
//   orphan. If the launcher itself is killed (SIGKILL cannot be forwarded), each rank gets
//   SIGTERM from the kernel (PR_SET_PDEATHSIG, kept across exec).
// - Rank 0 keeps the launcher's standard input; the other ranks read /dev/null, so only rank 0
//   (the front end of `run`, `chat`, `serve`) reads what the user types. Standard output and
//   error are shared and not prefixed: each rank's lines pass through as it writes them.

namespace ferry::cli {
namespace {

using Clock = std::chrono::steady_clock;

int g_wake[2] = {-1, -1};

void on_signal(int sig) {
  const int saved = errno;
  const auto byte = static_cast<char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_wake[1], &byte, 1);
  errno = saved;
}

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP};

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}

class Supervisor {
 public:
  Supervisor() {
    FERRY_CHECK(::pipe2(g_wake, O_CLOEXEC | O_NONBLOCK) == 0, IoError,
                "ferry launch: cannot create its signal pipe: {}", std::strerror(errno));
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (const int sig : kForwarded) ::sigaction(sig, &action, &previous_[sig]);
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    ::sigaction(SIGCHLD, &action, &previous_[SIGCHLD]);
  }
  ~Supervisor() {
    // Whatever happened, no rank outlives the launcher unreaped.
    stop_all(SIGKILL);
    while (alive_ > 0 && reap(/*block=*/true)) {
    }
    for (const int sig : kForwarded) ::sigaction(sig, &previous_[sig], nullptr);
    ::sigaction(SIGCHLD, &previous_[SIGCHLD], nullptr);
    ::close(g_wake[0]);
    ::close(g_wake[1]);
    g_wake[0] = g_wake[1] = -1;
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  void start(const std::string& program, const std::vector<std::string>& argv,
             const std::vector<std::string>& environment) {
    const int rank = static_cast<int>(pids_.size());
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (const std::string& e : environment) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    FERRY_CHECK(pid >= 0, IoError, "ferry launch: cannot start rank {}: fork: {}", rank,
                std::strerror(errno));
    if (pid == 0) {
      // The launcher's handlers write to its pipe: not the rank's, even before exec.
      for (const int sig : kForwarded) ::signal(sig, SIG_DFL);
      ::signal(SIGCHLD, SIG_DFL);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);  // the launcher is already gone
      if (rank > 0) {
        const int null = ::open("/dev/null", O_RDONLY);
        if (null >= 0) ::dup2(null, 0);
      }
      ::execve(program.c_str(), args.data(), envp.data());
      ::dprintf(2, "ferry launch: rank %d: cannot start %s: %s\n", rank, program.c_str(),
                std::strerror(errno));
      ::_exit(127);
    }
    pids_.push_back(pid);
    exited_.push_back(false);
    ++alive_;
  }

  SupervisedRun supervise(std::chrono::milliseconds grace) {
    SupervisedRun run;
    std::optional<Clock::time_point> kill_at;
    while (alive_ > 0) {
      int wait_ms = 1000;  // a SIGCHLD wakes the poll sooner; this bounds a missed one
      if (kill_at) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(*kill_at - Clock::now());
        wait_ms = static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, wait_ms));
      }
      pollfd fd{.fd = g_wake[0], .events = POLLIN, .revents = 0};
      ::poll(&fd, 1, wait_ms);
      char signals[64];
      ssize_t n = 0;
      while ((n = ::read(g_wake[0], signals, sizeof signals)) > 0) {
        for (ssize_t i = 0; i < n; ++i) {
          const int sig = signals[i];
          if (sig == SIGCHLD) continue;
          fmt::print(stderr, "ferry launch: {} received; forwarding it to {} rank(s)\n",
                     signal_name(sig), alive_);
          run.signal_forwarded = sig;
          stop_all(sig);
          if (!kill_at) kill_at = Clock::now() + grace;
        }
      }
      while (std::optional<RankExit> exit = reap(/*block=*/false)) {
        const bool failed = !WIFEXITED(exit->status) || WEXITSTATUS(exit->status) != 0;
        if (!failed || run.first_failure) continue;
        run.first_failure = exit;
        if (run.signal_forwarded != 0) continue;  // being stopped already
        fmt::print(stderr, "ferry launch: rank {} (pid {}) {}{}\n", exit->rank,
                   pids_[static_cast<std::size_t>(exit->rank)], describe_exit(exit->status),
                   alive_ > 0 ? fmt::format("; stopping the other {} rank(s)", alive_) : "");
        stop_all(SIGTERM);
        if (!kill_at) kill_at = Clock::now() + grace;
      }
      if (kill_at && alive_ > 0 && Clock::now() >= *kill_at) {
        fmt::print(stderr, "ferry launch: {} rank(s) still running after {} ms; killing them\n",
                   alive_, grace.count());
        stop_all(SIGKILL);
        kill_at = Clock::time_point::max();
      }
    }
    return run;
  }

 private:
  void stop_all(int sig) {
    for (std::size_t r = 0; r < pids_.size(); ++r) {
      if (!exited_[r]) ::kill(pids_[r], sig);
    }
  }

  // One rank that ended (waiting for one when `block`), or nullopt.
  std::optional<RankExit> reap(bool block) {
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, block ? 0 : WNOHANG);
      if (pid < 0 && errno == EINTR) continue;
      if (pid <= 0) return std::nullopt;
      const auto it = std::find(pids_.begin(), pids_.end(), pid);
      if (it == pids_.end()) continue;  // not a rank (none expected)
      const auto rank = static_cast<std::size_t>(it - pids_.begin());
      exited_[rank] = true;
      --alive_;
      return RankExit{.rank = static_cast<int>(rank), .status = status};
    }
  }

  std::vector<pid_t> pids_;
  std::vector<bool> exited_;
  int alive_ = 0;
  struct sigaction previous_[NSIG] {};
};

}  // namespace

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                       signal_name(WTERMSIG(status)));
  }
  return fmt::format("ended with wait status {}", status);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

SupervisedRun run_ranks(const std::string& program, const std::vector<std::string>& argv,
                        const std::vector<std::vector<std::string>>& environments,
                        std::chrono::milliseconds grace) {
  Supervisor supervisor;
  for (const auto& environment : environments) supervisor.start(program, argv, environment);
  return supervisor.supervise(grace);
}

}  // namespace ferry::cli
