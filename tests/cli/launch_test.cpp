// `ferry launch` (Note [Supervising ranks]): N ranks of `ferry dist-check` on 127.0.0.1, the exit
// code and message when one fails, signals forwarded, and no rank left behind, running or zombie
// (this test process adopts orphans, so a rank the launcher failed to reap would show up here).
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <sys/wait.h>

#include "ports.h"
#include "process_watch.h"
#include "run_ferry.h"
#include "scratch_dir.h"
#include "spawn_ferry.h"

namespace ferry::cli {
namespace {

using namespace std::chrono_literals;
using ::testing::AllOf;
using testing::Clock;
using ::testing::ContainsRegex;
using testing::FerryProcess;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

class Launch : public ::testing::Test {
 protected:
  void SetUp() override { testing::adopt_orphans(); }
  void TearDown() override {
    // Every rank was reaped by its launcher: nothing is left for this process to adopt.
    const std::vector<pid_t> left = testing::children_of_this_process();
    EXPECT_THAT(left, IsEmpty());
    for (const pid_t pid : left) {  // a failure; leave nothing running
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }

  // Runs `ferry launch ARGS` to its end (at most `limit`); its wait status.
  int launch(const std::vector<std::string>& args, std::chrono::seconds limit = 180s) {
    std::vector<std::string> command{"launch"};
    command.insert(command.end(), args.begin(), args.end());
    process_ =
        std::make_unique<FerryProcess>(command, std::vector<std::string>{}, dir_ / "launch.log");
    const auto start = Clock::now();
    EXPECT_TRUE(testing::wait_for_exit(*process_, limit)) << output();
    elapsed_ = Clock::now() - start;
    return process_->wait();
  }
  std::string output() const { return process_->output(); }

  ferry::testing::ScratchDir dir_;
  std::unique_ptr<FerryProcess> process_;
  Clock::duration elapsed_{};
};

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

// The pids the ranks printed in their "ok" lines.
std::vector<pid_t> rank_pids(const std::string& output) {
  std::vector<pid_t> pids;
  const std::regex line(R"(rank \d+ of \d+ ok \(pid (\d+)\))");
  for (auto it = std::sregex_iterator(output.begin(), output.end(), line);
       it != std::sregex_iterator(); ++it) {
    pids.push_back(static_cast<pid_t>(std::stol((*it)[1])));
  }
  return pids;
}

TEST_F(Launch, TwoAndThreeRanksAllExitZero) {
  for (const int n : {2, 3}) {
    SCOPED_TRACE(n);
    EXPECT_EQ(exit_code(launch({"--nproc", std::to_string(n), "--", "dist-check"})), 0) << output();
    for (int r = 0; r < n; ++r) {
      EXPECT_THAT(output(), HasSubstr(fmt::format("rank {} of {} ok", r, n)));
    }
    EXPECT_THAT(output(), Not(HasSubstr("ferry launch:")));  // nothing to report
  }
}

TEST_F(Launch, ARankKilledBySignalFailsTheLaunchNamingIt) {
  const int status = launch({"--nproc", "3", "--timeout", "60", "--", "dist-check", "--die-rank",
                             "1", "--die-after-ms", "300"});
  EXPECT_EQ(exit_code(status), 128 + SIGKILL) << output();
  EXPECT_THAT(output(),
              AllOf(HasSubstr("rank 1 (pid"), HasSubstr("stopping the other 2 rank(s)"),
                    HasSubstr("rank 1 of 3 failed: it was killed by signal 9 (SIGKILL)")));
  EXPECT_LT(elapsed_, 60s);  // the others stopped at once, not after their timeout
}

TEST_F(Launch, ARanksExitStatusBecomesTheLaunchers) {
  const int status = launch({"--nproc", "2", "--", "dist-check", "--die-how", "exit", "--die-rank",
                             "1", "--die-after-ms", "0"});
  EXPECT_EQ(exit_code(status), 1) << output();
  EXPECT_THAT(output(), ContainsRegex("rank [01] of 2 failed: it exited with status 1"));
}

TEST_F(Launch, DisagreeingRanksFailTheLaunch) {
  EXPECT_EQ(exit_code(launch({"--nproc", "2", "--", "dist-check", "--mismatch-rank", "1"})), 1)
      << output();
  EXPECT_THAT(output(), AllOf(HasSubstr("rank 1 differs from rank 0 on fingerprint"),
                              HasSubstr("of 2 failed: it exited with status 1")));
}

TEST_F(Launch, ARankThatNeverArrivesIsNamedAndStopped) {
  const int status =
      launch({"--nproc", "3", "--timeout", "3", "--", "dist-check", "--absent-rank", "2"});
  EXPECT_EQ(exit_code(status), 1) << output();
  EXPECT_THAT(output(), AllOf(HasSubstr("rank 2 of 3 did not arrive"), HasSubstr("within 3 s")));
}

// Without --master-port, rank 0 binds a port and the launcher relays it (Note [A port nobody
// else can take]): launches started together each meet on their own port.
TEST_F(Launch, LaunchesStartedTogetherEachMeetOnTheirOwnPort) {
  std::vector<std::unique_ptr<FerryProcess>> launchers;
  for (int i = 0; i < 4; ++i) {
    launchers.push_back(std::make_unique<FerryProcess>(
        std::vector<std::string>{"launch", "--nproc", "2", "--timeout", "60", "--", "dist-check",
                                 "--fingerprint", fmt::format("launch {}", i)},
        std::vector<std::string>{}, dir_ / fmt::format("launch{}.log", i)));
  }
  for (auto& launcher : launchers) {
    ASSERT_TRUE(testing::wait_for_exit(*launcher, 180s)) << launcher->output();
    EXPECT_EQ(exit_code(launcher->wait()), 0) << launcher->output();
    EXPECT_EQ(rank_pids(launcher->output()).size(), 2u) << launcher->output();
  }
}

// Ranks waiting for the port of a rank 0 that never opens its store fail within the timeout,
// naming it.
TEST_F(Launch, ARankZeroThatNeverOpensItsStoreIsNamed) {
  const int status =
      launch({"--nproc", "3", "--timeout", "3", "--", "dist-check", "--absent-rank", "0"});
  EXPECT_EQ(exit_code(status), 1) << output();
  EXPECT_THAT(output(), AllOf(HasSubstr("rank 0 did not open its rendezvous store"),
                              HasSubstr("within 3 s")));
  EXPECT_LT(elapsed_, 60s);
}

TEST_F(Launch, APortInUseIsNamed) {
  const ferry::testing::BoundPort taken(/*listen=*/true);
  const int status = launch({"--nproc", "2", "--timeout", "20", "--master-port",
                             std::to_string(taken.port()), "--", "dist-check"});
  EXPECT_NE(exit_code(status), 0) << output();
  EXPECT_THAT(output(),
              AllOf(HasSubstr(fmt::format("127.0.0.1:{}", taken.port())), HasSubstr("in use")));
}

// Starts `ferry launch --nproc 2 -- dist-check --linger-ms 600000` and returns the two ranks'
// pids once both have passed the check (and linger).
std::vector<pid_t> start_lingering_ranks(std::unique_ptr<FerryProcess>& launcher,
                                         const ferry::testing::ScratchDir& dir,
                                         const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"launch", "--nproc",    "2",           "--grace", "1",
                                "--",     "dist-check", "--linger-ms", "600000"};
  args.insert(args.end(), extra.begin(), extra.end());
  launcher = std::make_unique<FerryProcess>(args, std::vector<std::string>{}, dir / "launch.log");
  const auto until = Clock::now() + 180s;
  while (rank_pids(launcher->output()).size() < 2 && launcher->running() && Clock::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  return rank_pids(launcher->output());
}

class LaunchSignal : public Launch, public ::testing::WithParamInterface<int> {};

// A signal to the launcher reaches every rank; the launcher reaps them all and reports it.
TEST_P(LaunchSignal, IsForwardedToEveryRank) {
  const int sig = GetParam();
  const std::vector<pid_t> pids = start_lingering_ranks(process_, dir_);
  ASSERT_EQ(pids.size(), 2u) << output();
  process_->signal(sig);
  ASSERT_TRUE(testing::wait_for_exit(*process_, 60s)) << output();
  EXPECT_EQ(exit_code(process_->wait()), 128 + sig) << output();
  EXPECT_THAT(output(), HasSubstr(fmt::format("SIG{} received; forwarding it to 2 rank(s)",
                                              sig == SIGTERM ? "TERM" : "INT")));
  for (const pid_t pid : pids) EXPECT_FALSE(testing::process_exists(pid)) << pid;
}

// Ranks that ignore the forwarded SIGTERM are killed once the grace period (1 s) has passed.
TEST_F(Launch, RanksThatIgnoreSigtermAreKilledAfterTheGracePeriod) {
  const std::vector<pid_t> pids = start_lingering_ranks(process_, dir_, {"--ignore-sigterm"});
  ASSERT_EQ(pids.size(), 2u) << output();
  const auto start = Clock::now();
  process_->signal(SIGTERM);
  ASSERT_TRUE(testing::wait_for_exit(*process_, 60s)) << output();
  EXPECT_GE(Clock::now() - start, 1s);
  EXPECT_EQ(exit_code(process_->wait()), 128 + SIGKILL) << output();
  EXPECT_THAT(output(), AllOf(HasSubstr("2 rank(s) still running after 1000 ms; killing them"),
                              HasSubstr("failed: it was killed by signal 9 (SIGKILL)")));
  for (const pid_t pid : pids) EXPECT_FALSE(testing::process_exists(pid)) << pid;
}

// SIGKILL cannot be forwarded: the kernel sends each rank SIGTERM when its launcher dies. The
// ranks, orphaned, become this process's children; it reaps them here.
TEST_F(Launch, RanksEndWhenTheLauncherIsKilled) {
  const std::vector<pid_t> pids = start_lingering_ranks(process_, dir_);
  ASSERT_EQ(pids.size(), 2u) << output();
  process_->signal(SIGKILL);
  process_->wait();
  for (const pid_t pid : pids) {
    SCOPED_TRACE(pid);
    int status = 0;
    const auto until = Clock::now() + 60s;
    while (::waitpid(pid, &status, WNOHANG) != pid && Clock::now() < until) {
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
    if (testing::process_exists(pid)) ::kill(pid, SIGKILL);  // failed: leave nothing behind
  }
}

INSTANTIATE_TEST_SUITE_P(TermAndInt, LaunchSignal, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& p) {
                           return std::string(p.param == SIGTERM ? "Term" : "Int");
                         });

TEST(LaunchFlags, BadCommandLinesAreRefused) {
  for (const char* args : {"launch --nproc 0 -- dist-check", "launch --nproc 2",
                           "launch -- dist-check", "launch --nproc 2 --master-port 70000 -- run",
                           "launch --nproc 2 -- launch --nproc 2 -- dist-check"}) {
    SCOPED_TRACE(args);
    const auto r = testing::run_ferry(args);
    EXPECT_NE(r.exit_code, 0) << r.out;
    EXPECT_THAT(r.out, Not(HasSubstr("rank 0")));
  }
}

TEST(LaunchFlags, HelpListsLaunchButNotTheDiagnostic) {
  const auto r = testing::run_ferry("--help");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, AllOf(HasSubstr("launch"), Not(HasSubstr("dist-check"))));
  const auto launch_help = testing::run_ferry("launch --help");
  EXPECT_THAT(launch_help.out, AllOf(HasSubstr("--nproc"), HasSubstr("--master-addr"),
                                     HasSubstr("--master-port"), HasSubstr("--timeout")));
}

}  // namespace
}  // namespace ferry::cli
