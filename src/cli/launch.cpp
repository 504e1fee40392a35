// `ferry launch --nproc N -- COMMAND...`: starts N ranks of a ferry command on this host, as
// torchrun does (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK), and supervises them
// (Note [Supervising ranks] in rank_processes.cpp). Part of the front end: no LibTorch. Each rank
// runs this same program (/proc/self/exe), which hands computing commands to the engine.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <netdb.h>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/rank_processes.h"
#include "ferry/core/error.h"

extern char** environ;

namespace ferry::cli {
namespace {

// More ranks than this on one host is a typo, not a plan.
constexpr int kMaxLocalRanks = 1024;

struct LaunchOptions {
  int nproc = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;   // 0: a free port, chosen by rank 0 and relayed
  double timeout_s = 0;  // 0: FERRY_DIST_TIMEOUT as inherited, else the ranks' default (60 s)
  double grace_s = 10;   // between SIGTERM and SIGKILL when stopping ranks
  std::vector<std::string> command;
};

// Fails early, naming --master-addr, when `host` does not resolve (rank 0 would fail later).
void check_resolves(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), "0", &hints, &found); rc != 0) {
    throw InvalidArgument(
        fmt::format("--master-addr {}: cannot resolve it: {}", host, ::gai_strerror(rc)),
        ErrorFields{.path = "--master-addr", .actual = host});
  }
  ::freeaddrinfo(found);
}

// This process's environment without the variables the launcher sets, then those for `rank`.
std::vector<std::string> rank_environment(const LaunchOptions& o, std::uint16_t port, int rank) {
  std::vector<std::string_view> owned{
      "MASTER_ADDR=", "MASTER_PORT=",      "WORLD_SIZE=",     "RANK=",
      "LOCAL_RANK=",  "LOCAL_WORLD_SIZE=", "FERRY_PORT_PIPE="};
  if (o.timeout_s > 0) owned.push_back("FERRY_DIST_TIMEOUT=");
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const bool ours = std::any_of(owned.begin(), owned.end(),
                                  [&](std::string_view name) { return entry.starts_with(name); });
    if (!ours) env.emplace_back(entry);
  }
  env.push_back("MASTER_ADDR=" + o.master_addr);
  env.push_back(fmt::format("MASTER_PORT={}", port));
  env.push_back(fmt::format("WORLD_SIZE={}", o.nproc));
  env.push_back(fmt::format("RANK={}", rank));
  env.push_back(fmt::format("LOCAL_RANK={}", rank));
  env.push_back(fmt::format("LOCAL_WORLD_SIZE={}", o.nproc));
  if (o.timeout_s > 0) env.push_back(fmt::format("FERRY_DIST_TIMEOUT={}", o.timeout_s));
  return env;
}

int launch(const LaunchOptions& o) {
  FERRY_CHECK(!o.master_addr.empty(), InvalidArgument, "--master-addr: expected a host, got ''");
  if (o.command.front() == "launch") {
    throw InvalidArgument("launch: the ranks' command cannot be `launch` itself",
                          ErrorFields{.path = "command", .actual = "launch"});
  }
  // No port given: rank 0 binds one and the launcher relays it (MASTER_PORT=0; Note [A port
  // nobody else can take] in engine/world.cpp).
  check_resolves(o.master_addr);
  const auto port = static_cast<std::uint16_t>(o.master_port);
  std::vector<std::string> argv{"ferry"};
  argv.insert(argv.end(), o.command.begin(), o.command.end());
  std::vector<std::vector<std::string>> environments;
  for (int rank = 0; rank < o.nproc; ++rank)
    environments.push_back(rank_environment(o, port, rank));

  const SupervisedRun run =
      run_ranks("/proc/self/exe", argv, environments,
                std::chrono::milliseconds(static_cast<std::int64_t>(o.grace_s * 1000)),
                /*relay_port=*/port == 0);
  if (!run.first_failure) return 0;
  const RankExit& failure = *run.first_failure;
  fmt::print(stderr, "ferry launch: rank {} of {} failed: it {}{}\n", failure.rank, o.nproc,
             describe_exit(failure.status),
             run.signal_forwarded != 0 ? " (after the launcher forwarded a signal)" : "");
  const int code = exit_code_of(failure.status);
  return code != 0 ? code : 1;
}

}  // namespace

void add_launch_command(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand("launch", std::string(kLaunchDescription));
  auto o = std::make_shared<LaunchOptions>();
  cmd->add_option("--nproc", o->nproc, "Ranks to start on this host")
      ->required()
      ->check(CLI::Range(1, kMaxLocalRanks));
  cmd->add_option("--master-addr", o->master_addr,
                  "Address rank 0's rendezvous store listens on and the ranks meet at (default "
                  "127.0.0.1)");
  cmd->add_option("--master-port", o->master_port,
                  "Port of rank 0's rendezvous store (default 0: a free one)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--timeout", o->timeout_s,
                  "Seconds a rank waits for another before failing with an error naming it (sets "
                  "FERRY_DIST_TIMEOUT; default 60)")
      ->check(CLI::Range(0.001, 86400.0));
  cmd->add_option("--grace", o->grace_s,
                  "Seconds stopped ranks get between SIGTERM and SIGKILL (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  cmd->add_option("command", o->command,
                  "The ferry command and arguments every rank runs, after `--`")
      ->required();
  cmd->callback([&runner, o] { runner = [o] { return launch(*o); }; });
}

}  // namespace ferry::cli
