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
// - When asked to, the same loop relays the port rank 0's store bound to the other ranks (Note
//   [A port nobody else can take] in engine/world.cpp): each rank gets one end of a pipe of its
//   own, named by FERRY_PORT_PIPE; the line rank 0 writes to its pipe is written to every other
//   rank's, and then (or when rank 0's pipe ends without one) those are closed. SIGPIPE is
//   ignored meanwhile: a rank that already ended is no failure of the relay.

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

// The pipes of Note [Supervising ranks]'s port relay: one per rank, created close-on-exec; a
// rank's own end is kept across its exec.
class PortRelay {
 public:
  explicit PortRelay(std::size_t ranks) {
    for (std::size_t r = 0; r < ranks; ++r) {
      int ends[2] = {-1, -1};
      FERRY_CHECK(::pipe2(ends, O_CLOEXEC) == 0, IoError,
                  "ferry launch: cannot create the port pipe of rank {}: {}", r,
                  std::strerror(errno));
      // Rank 0 writes (ends[1]) and the launcher reads (ends[0]); for the others the reverse.
      rank_end_.push_back(r == 0 ? ends[1] : ends[0]);
      launcher_end_.push_back(r == 0 ? ends[0] : ends[1]);
    }
  }
  ~PortRelay() {
    for (int& fd : rank_end_) close_fd(fd);
    for (int& fd : launcher_end_) close_fd(fd);
  }
  PortRelay(const PortRelay&) = delete;
  PortRelay& operator=(const PortRelay&) = delete;

  // The descriptor rank `r` keeps (FERRY_PORT_PIPE).
  int rank_end(std::size_t r) const { return rank_end_[r]; }
  // Once every rank started: the launcher's copies of the ranks' ends go, so that rank 0's pipe
  // ends when rank 0 does.
  void ranks_started() {
    for (int& fd : rank_end_) close_fd(fd);
  }
  // The launcher's end of rank 0's pipe while a port may still come, else -1.
  int source() const { return launcher_end_.empty() ? -1 : launcher_end_[0]; }

  // Reads what rank 0 wrote; a whole line is relayed, and the end of its pipe (or a line too
  // long to be a port) ends the relay.
  void read_source() {
    char buffer[32];
    const ssize_t n = ::read(source(), buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n > 0) line_.append(buffer, static_cast<std::size_t>(n));
    const std::size_t end = line_.find('\n');
    if (end != std::string::npos) {
      for (std::size_t r = 1; r < launcher_end_.size(); ++r) {
        [[maybe_unused]] const ssize_t w = ::write(launcher_end_[r], line_.data(), end + 1);
      }
    } else if (n > 0 && line_.size() <= 16) {
      return;  // more to come
    }
    for (int& fd : launcher_end_) close_fd(fd);
    launcher_end_.clear();
  }

 private:
  static void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  std::vector<int> rank_end_;
  std::vector<int> launcher_end_;
  std::string line_;
};

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
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, &previous_[SIGPIPE]);
  }
  ~Supervisor() {
    // Whatever happened, no rank outlives the launcher unreaped.
    stop_all(SIGKILL);
    while (alive_ > 0 && reap(/*block=*/true)) {
    }
    for (const int sig : kForwarded) ::sigaction(sig, &previous_[sig], nullptr);
    ::sigaction(SIGCHLD, &previous_[SIGCHLD], nullptr);
    ::sigaction(SIGPIPE, &previous_[SIGPIPE], nullptr);
    ::close(g_wake[0]);
    ::close(g_wake[1]);
    g_wake[0] = g_wake[1] = -1;
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts the next rank; `keep` (≥ 0) is a descriptor it keeps across exec.
  void start(const std::string& program, const std::vector<std::string>& argv,
             const std::vector<std::string>& environment, int keep) {
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
      ::signal(SIGPIPE, SIG_DFL);  // an ignored signal stays ignored across exec
      if (keep >= 0) ::fcntl(keep, F_SETFD, 0);
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

  SupervisedRun supervise(std::chrono::milliseconds grace, PortRelay* relay) {
    SupervisedRun run;
    std::optional<Clock::time_point> kill_at;
    while (alive_ > 0) {
      int wait_ms = 1000;  // a SIGCHLD wakes the poll sooner; this bounds a missed one
      if (kill_at) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(*kill_at - Clock::now());
        wait_ms = static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, wait_ms));
      }
      pollfd fds[2] = {
          {.fd = g_wake[0], .events = POLLIN, .revents = 0},
          {.fd = relay != nullptr ? relay->source() : -1, .events = POLLIN, .revents = 0}};
      ::poll(fds, 2, wait_ms);
      if (fds[1].fd >= 0 && fds[1].revents != 0) relay->read_source();
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
                        std::chrono::milliseconds grace, bool relay_port) {
  std::optional<PortRelay> relay;
  if (relay_port) relay.emplace(environments.size());
  Supervisor supervisor;
  for (std::size_t r = 0; r < environments.size(); ++r) {
    std::vector<std::string> environment = environments[r];
    const int keep = relay ? relay->rank_end(r) : -1;
    if (relay) environment.push_back(fmt::format("FERRY_PORT_PIPE={}", keep));
    supervisor.start(program, argv, environment, keep);
  }
  if (relay) relay->ranks_started();
  return supervisor.supervise(grace, relay ? &*relay : nullptr);
}

}  // namespace ferry::cli
