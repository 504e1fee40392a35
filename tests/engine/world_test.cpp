// The world of a distributed run (Note [Ranks and failures]): the launcher's environment, read
// strictly; rendezvous, agreement and the ring of sends and receives with 2 and 3 ranks; and what
// the other ranks report, and how soon, when one differs, dies, hangs or never arrives. The
// ranks are `ferry dist-check` processes on 127.0.0.1 given torchrun's variables directly (no
// launcher; `ferry launch` is tested in tests/cli/launch_test.cpp).
#include "ferry/engine/world.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <map>
#include <memory>
#include <optional>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "cli/process_watch.h"
#include "ports.h"
#include "scratch_dir.h"

namespace ferry::engine {
namespace {

using namespace std::chrono_literals;
using cli::testing::Clock;
using cli::testing::FerryProcess;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// Sets environment variables for the life of the object and restores them after.
class EnvScope {
 public:
  EnvScope(std::initializer_list<std::pair<const char*, std::optional<std::string>>> values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value) {
        ::setenv(name, value->c_str(), 1);
      } else {
        ::unsetenv(name);
      }
    }
  }
  ~EnvScope() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// A pipe, both ends closed with the object.
class Pipe {
 public:
  Pipe() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  int read_end() const { return fds_[0]; }
  int write_end() const { return fds_[1]; }
  void close_read() { close_end(fds_[0]); }
  void close_write() { close_end(fds_[1]); }
  void write(std::string_view text) const {
    ASSERT_EQ(::write(fds_[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }

 private:
  static void close_end(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  int fds_[2] = {-1, -1};
};

// ---- The environment ----

TEST(WorldEnvironment, NoWorldSizeIsNotADistributedRun) {
  EnvScope env{{"WORLD_SIZE", std::nullopt}, {"RANK", "3"}};
  EXPECT_FALSE(world_from_environment().has_value());
}

TEST(WorldEnvironment, ReadsTorchrunsVariables) {
  EnvScope env{{"WORLD_SIZE", "3"},
               {"RANK", "2"},
               {"LOCAL_RANK", "0"},
               {"MASTER_ADDR", "10.1.2.3"},
               {"MASTER_PORT", "29500"}};
  const std::optional<WorldInfo> info = world_from_environment();
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->world_size, 3);
  EXPECT_EQ(info->rank, 2);
  EXPECT_EQ(info->local_rank, 0);
  EXPECT_EQ(info->master_addr, "10.1.2.3");
  EXPECT_EQ(info->master_port, 29500);
}

TEST(WorldEnvironment, LocalRankDefaultsToRank) {
  EnvScope env{{"WORLD_SIZE", "2"},
               {"RANK", "1"},
               {"LOCAL_RANK", std::nullopt},
               {"MASTER_ADDR", "127.0.0.1"},
               {"MASTER_PORT", "1234"}};
  EXPECT_EQ(world_from_environment()->local_rank, 1);
}

TEST(WorldEnvironment, EachMalformedVariableIsNamedWithItsValue) {
  struct Case {
    const char* name;
    const char* value;
  };
  for (const Case c :
       {Case{"WORLD_SIZE", "0"}, Case{"WORLD_SIZE", "two"}, Case{"WORLD_SIZE", " 2"},
        Case{"WORLD_SIZE", "99999999"}, Case{"RANK", "2"}, Case{"RANK", "-1"}, Case{"RANK", "1x"},
        Case{"LOCAL_RANK", "x"}, Case{"LOCAL_RANK", "5"}, Case{"MASTER_ADDR", ""},
        Case{"MASTER_ADDR", "a host"}, Case{"MASTER_PORT", "0"}, Case{"MASTER_PORT", "70000"},
        Case{"MASTER_PORT", "80x"}, Case{"MASTER_PORT", ""}}) {
    SCOPED_TRACE(std::string(c.name) + "=" + c.value);
    EnvScope valid{{"WORLD_SIZE", "2"},
                   {"RANK", "1"},
                   {"LOCAL_RANK", "1"},
                   {"MASTER_ADDR", "127.0.0.1"},
                   {"MASTER_PORT", "1234"}};
    EnvScope bad{{c.name, c.value}};
    try {
      world_from_environment();
      ADD_FAILURE() << "accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr(std::string("environment variable ") + c.name),
                                  HasSubstr(std::string("'") + c.value + "'")));
      EXPECT_EQ(e.path(), c.name);
      EXPECT_EQ(e.actual(), c.value);
    }
  }
}

TEST(WorldEnvironment, ALaunchersPortPipeAllowsPortZero) {
  Pipe pipe;
  EnvScope env{{"WORLD_SIZE", "2"},
               {"RANK", "1"},
               {"MASTER_ADDR", "127.0.0.1"},
               {"MASTER_PORT", "0"},
               {"FERRY_PORT_PIPE", std::to_string(pipe.read_end())}};
  const std::optional<WorldInfo> info = world_from_environment();
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->master_port, 0);
  EXPECT_EQ(info->port_pipe, pipe.read_end());
  EXPECT_EQ(::fcntl(pipe.read_end(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);  // not passed on
}

TEST(WorldEnvironment, APortPipeThatIsNotAnOpenDescriptorIsNamed) {
  for (const char* value : {"x", "-1", "", "1000000", "3 "}) {
    SCOPED_TRACE(value);
    EnvScope env{{"WORLD_SIZE", "2"},
                 {"RANK", "1"},
                 {"MASTER_ADDR", "127.0.0.1"},
                 {"MASTER_PORT", "0"},
                 {"FERRY_PORT_PIPE", value}};
    try {
      world_from_environment();
      ADD_FAILURE() << "accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(e.path(), "FERRY_PORT_PIPE");
      EXPECT_EQ(e.actual(), value);
    }
  }
}

TEST(WorldEnvironment, EachMissingVariableIsNamed) {
  for (const char* missing : {"RANK", "MASTER_ADDR", "MASTER_PORT"}) {
    SCOPED_TRACE(missing);
    EnvScope valid{{"WORLD_SIZE", "2"},
                   {"RANK", "1"},
                   {"LOCAL_RANK", std::nullopt},
                   {"MASTER_ADDR", "127.0.0.1"},
                   {"MASTER_PORT", "1234"}};
    EnvScope unset{{missing, std::nullopt}};
    try {
      world_from_environment();
      ADD_FAILURE() << "accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_THAT(e.what(),
                  HasSubstr(std::string("environment variable ") + missing + " is not set"));
      EXPECT_EQ(e.path(), missing);
    }
  }
}

TEST(WorldEnvironment, TimeoutComesFromFerryDistTimeout) {
  {
    EnvScope env{{"FERRY_DIST_TIMEOUT", std::nullopt}};
    EXPECT_EQ(world_options_from_environment().timeout, 60s);
  }
  {
    EnvScope env{{"FERRY_DIST_TIMEOUT", "2.5"}};
    EXPECT_EQ(world_options_from_environment().timeout, 2500ms);
  }
  for (const char* bad : {"0", "-1", "abc", "", "5s", "1e9"}) {
    SCOPED_TRACE(bad);
    EnvScope env{{"FERRY_DIST_TIMEOUT", bad}};
    try {
      world_options_from_environment();
      ADD_FAILURE() << "accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_THAT(e.what(), HasSubstr("environment variable FERRY_DIST_TIMEOUT"));
      EXPECT_EQ(e.path(), "FERRY_DIST_TIMEOUT");
    }
  }
}

// ---- One process ----

WorldInfo loopback(std::uint16_t port, int world_size, int rank) {
  return {.master_addr = "127.0.0.1",
          .master_port = port,
          .world_size = world_size,
          .rank = rank,
          .local_rank = rank};
}

TEST(World, OneRankAgreesWithItselfAndRefusesToTalkToItself) {
  const ferry::testing::ReservedPort port;
  const auto world = World::join(loopback(port.port(), 1, 0), {.timeout = 30s});
  EXPECT_EQ(world->rank(), 0);
  EXPECT_EQ(world->size(), 1);
  world->agree("fingerprint", "abc");
  world->agree("fingerprint", "abc");  // the same question twice
  world->barrier();
  EXPECT_THROW(world->send(at::zeros({2}), 0), InvalidArgument);
  EXPECT_THROW(world->send(at::zeros({2}), 1), InvalidArgument);
}

TEST(World, APortInUseIsNamed) {
  const ferry::testing::BoundPort taken(/*listen=*/true);
  const auto start = Clock::now();
  try {
    World::join(loopback(taken.port(), 2, 0), {.timeout = 30s});
    ADD_FAILURE() << "joined on a port in use";
  } catch (const DistributedError& e) {
    EXPECT_THAT(e.what(),
                AllOf(HasSubstr(fmt::format("127.0.0.1:{}", taken.port())), HasSubstr("in use")));
  }
  EXPECT_LT(Clock::now() - start, 10s);  // at once, not after the timeout
}

TEST(World, AnUnreachableMasterIsNamedWithTheTimeout) {
  const ferry::testing::ReservedPort reserved;
  const std::uint16_t port = reserved.port();
  const auto start = Clock::now();
  try {
    World::join(loopback(port, 2, 1), {.timeout = 2s});
    ADD_FAILURE() << "joined without a master";
  } catch (const DistributedError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr(fmt::format("127.0.0.1:{}", port)),
                                HasSubstr("within 2 s"), HasSubstr("rank 0")));
  }
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 1500ms);
  EXPECT_LT(elapsed, 20s);
}

TEST(World, RanksThatNeverArriveAreNamed) {
  const auto start = Clock::now();
  try {
    const ferry::testing::ReservedPort port;
    World::join(loopback(port.port(), 3, 0), {.timeout = 2s});
    ADD_FAILURE() << "joined alone";
  } catch (const DistributedError& e) {
    EXPECT_THAT(e.what(),
                AllOf(HasSubstr("ranks 1 and 2 of 3 did not arrive"), HasSubstr("within 2 s")));
  }
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 1900ms);
  EXPECT_LT(elapsed, 20s);
}

// ---- A port rank 0 chose, through the launcher's pipe (Note [A port nobody else can take]) ----

WorldInfo through_pipe(int world_size, int rank, int pipe) {
  WorldInfo info = loopback(0, world_size, rank);
  info.port_pipe = pipe;
  return info;
}

// Two ranks in two threads of this process: rank 0's pipe feeds rank 1's (the launcher's relay,
// with one listener). They rendezvous on the port rank 0 bound, agree and pass a tensor.
TEST(WorldPortPipe, RankZeroBindsAPortAndTheOtherLearnsIt) {
  Pipe pipe;
  std::exception_ptr zero_failed;
  at::Tensor sent = at::arange(5, at::kFloat);
  std::unique_ptr<World> zero;
  std::thread zero_thread([&] {
    try {
      zero = World::join(through_pipe(2, 0, pipe.write_end()), {.timeout = 30s});
      zero->agree("fingerprint", "same");
      zero->send(sent, 1);
    } catch (...) {
      zero_failed = std::current_exception();
    }
  });
  std::unique_ptr<World> one;
  at::Tensor got = at::zeros({5}, at::kFloat);
  EXPECT_NO_THROW({
    one = World::join(through_pipe(2, 1, pipe.read_end()), {.timeout = 30s});
    one->agree("fingerprint", "same");
    one->recv(got, 0);
  });
  one.reset();  // leaves first: rank 0 holds the store
  zero_thread.join();
  zero.reset();
  if (zero_failed) std::rethrow_exception(zero_failed);
  EXPECT_TRUE(at::equal(got, sent));
}

TEST(WorldPortPipe, APipeEndedWithoutAPortFailsAtOnceNamingRankZero) {
  Pipe pipe;
  pipe.close_write();  // rank 0 ended before it opened its store
  const auto start = Clock::now();
  try {
    World::join(through_pipe(2, 1, pipe.read_end()), {.timeout = 30s});
    ADD_FAILURE() << "joined without a port";
  } catch (const DistributedError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("rank 1 of 2"), HasSubstr("rank 0 ended or failed"),
                                HasSubstr("no port")));
  }
  EXPECT_LT(Clock::now() - start, 10s);
}

TEST(WorldPortPipe, ASilentPipeFailsWithinTheTimeout) {
  Pipe pipe;
  const auto start = Clock::now();
  try {
    World::join(through_pipe(3, 2, pipe.read_end()), {.timeout = 1s});
    ADD_FAILURE() << "joined without a port";
  } catch (const DistributedError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("rank 2 of 3"),
                                HasSubstr("rank 0 did not open its rendezvous store"),
                                HasSubstr("within 1 s")));
  }
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 900ms);
  EXPECT_LT(elapsed, 10s);
}

TEST(WorldPortPipe, WhatIsNotAPortIsNamed) {
  for (const char* text : {"x\n", "0\n", "70000\n", "123", "12345678901234567890"}) {
    SCOPED_TRACE(text);
    Pipe pipe;
    pipe.write(text);
    pipe.close_write();
    try {
      World::join(through_pipe(2, 1, pipe.read_end()), {.timeout = 5s});
      ADD_FAILURE() << "joined";
    } catch (const DistributedError& e) {
      EXPECT_THAT(e.what(), HasSubstr("rank 0 ended or failed"));
      EXPECT_EQ(e.actual().substr(0, 2), std::string_view(text).substr(0, 2));
    }
  }
}

TEST(WorldPortPipe, PortZeroWithoutAPipeIsRefused) {
  EXPECT_THROW(World::join(loopback(0, 2, 1), {.timeout = 1s}), InvalidArgument);
}

// ---- Ranks as processes ----

// Some ranks of a world at 127.0.0.1, each `ferry dist-check ARGS` given torchrun's variables.
class Ranks {
 public:
  Ranks(const ferry::testing::ScratchDir& dir, int world_size, const std::vector<int>& ranks,
        const std::vector<std::string>& args) {
    const std::uint16_t port = port_.port();
    std::vector<std::string> command{"dist-check"};
    command.insert(command.end(), args.begin(), args.end());
    for (const int r : ranks) {
      processes_[r] = std::make_unique<FerryProcess>(
          command,
          std::vector<std::string>{"MASTER_ADDR=127.0.0.1", fmt::format("MASTER_PORT={}", port),
                                   fmt::format("WORLD_SIZE={}", world_size),
                                   fmt::format("RANK={}", r), fmt::format("LOCAL_RANK={}", r)},
          dir / fmt::format("rank{}.log", r));
    }
  }

  // Waits until every rank has ended, at most `limit`, noting when each ended; those still
  // running then are a failure (and killed).
  void wait_all(std::chrono::seconds limit) {
    const auto until = Clock::now() + limit;
    for (;;) {
      bool running = false;
      for (auto& [r, p] : processes_) {
        if (ended_.count(r) == 0 && !p->running()) ended_[r] = Clock::now();
        running = running || ended_.count(r) == 0;
      }
      if (!running) return;
      if (Clock::now() >= until) {
        for (auto& [r, p] : processes_) {
          if (ended_.count(r) == 0) ADD_FAILURE() << "rank " << r << " still runs:\n" << output(r);
        }
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
  }

  int status(int r) { return processes_.at(r)->wait(); }
  std::string output(int r) const { return processes_.at(r)->output(); }
  Clock::time_point ended(int r) const { return ended_.at(r); }
  FerryProcess& process(int r) { return *processes_.at(r); }

 private:
  const ferry::testing::ReservedPort port_;  // held while the ranks live
  std::map<int, std::unique_ptr<FerryProcess>> processes_;
  std::map<int, Clock::time_point> ended_;
};

std::vector<int> all_ranks(int n) {
  std::vector<int> ranks(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) ranks[static_cast<std::size_t>(r)] = r;
  return ranks;
}

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

class WorldOfRanks : public ::testing::TestWithParam<int> {};

TEST_P(WorldOfRanks, AgreeAndPassATensorRoundTheRing) {
  const int n = GetParam();
  ferry::testing::ScratchDir dir;
  Ranks ranks(dir, n, all_ranks(n), {"--timeout", "60"});
  ranks.wait_all(120s);
  for (int r = 0; r < n; ++r) {
    SCOPED_TRACE(r);
    EXPECT_TRUE(exited_with(ranks.status(r), 0)) << ranks.output(r);
    EXPECT_THAT(ranks.output(r),
                AllOf(HasSubstr(fmt::format("rank {} of {} ok", r, n)),
                      HasSubstr(fmt::format("a message from rank {}", (r + n - 1) % n))));
  }
}

TEST_P(WorldOfRanks, ADifferentFingerprintIsNamedByEveryRank) {
  const int n = GetParam();
  const int odd = n - 1;
  ferry::testing::ScratchDir dir;
  Ranks ranks(dir, n, all_ranks(n), {"--timeout", "60", "--mismatch-rank", std::to_string(odd)});
  ranks.wait_all(120s);
  for (int r = 0; r < n; ++r) {
    SCOPED_TRACE(r);
    EXPECT_TRUE(exited_with(ranks.status(r), 1)) << ranks.output(r);
    EXPECT_THAT(
        ranks.output(r),
        AllOf(HasSubstr(fmt::format("rank {} differs from rank 0 on fingerprint", odd)),
              HasSubstr("rank 0 has \"ferry dist-check\""),
              HasSubstr(fmt::format("rank {} has \"ferry dist-check/rank {}\"", odd, odd))));
  }
}

TEST(WorldOfRanksAgreement, LongValuesAreShownAroundTheirDifference) {
  ferry::testing::ScratchDir dir;
  const std::string fingerprint(300, 'f');
  Ranks ranks(dir, 2, {0, 1},
              {"--timeout", "60", "--mismatch-rank", "1", "--fingerprint", fingerprint});
  ranks.wait_all(120s);
  EXPECT_TRUE(exited_with(ranks.status(0), 1)) << ranks.output(0);
  const std::string out = ranks.output(0);
  EXPECT_THAT(out, AllOf(HasSubstr("rank 1 differs from rank 0 on fingerprint"),
                         HasSubstr("ffff/rank 1\" (307 bytes, differing from byte 300)"),
                         HasSubstr("(300 bytes, differing from byte 300)")));
  EXPECT_THAT(out, Not(HasSubstr(fingerprint)));  // shortened
}

// A rank killed while the others wait on it: they name it at once (its connection closes), long
// before their 60 s timeout.
TEST_P(WorldOfRanks, ARankKilledMidExchangeIsNamedWellWithinTheTimeout) {
  const int n = GetParam();
  ferry::testing::ScratchDir dir;
  Ranks ranks(dir, n, all_ranks(n),
              {"--timeout", "60", "--die-rank", "1", "--die-after-ms", "300"});
  ranks.wait_all(120s);
  const int victim = ranks.status(1);
  ASSERT_TRUE(WIFSIGNALED(victim) && WTERMSIG(victim) == SIGKILL) << ranks.output(1);
  for (int r = 0; r < n; ++r) {
    if (r == 1) continue;
    SCOPED_TRACE(r);
    EXPECT_TRUE(exited_with(ranks.status(r), 1)) << ranks.output(r);
    EXPECT_THAT(ranks.output(r), HasSubstr("lost rank 1")) << ranks.output(r);
    EXPECT_LT(ranks.ended(r) - ranks.ended(1), 10s);
  }
}

INSTANTIATE_TEST_SUITE_P(TwoAndThree, WorldOfRanks, ::testing::Values(2, 3),
                         [](const auto& p) { return fmt::format("{}Ranks", p.param); });

// In a ring of 4, rank 0 waits on rank 3 alone, which waits on rank 2: when rank 2 dies, rank 0
// loses rank 3 and names rank 2 as the first failure (as a pipeline's first stage would).
TEST(WorldOfRanksCascade, TheFirstFailureIsNamedByRanksThatLostAnother) {
  ferry::testing::ScratchDir dir;
  Ranks ranks(dir, 4, all_ranks(4),
              {"--timeout", "60", "--die-rank", "2", "--die-after-ms", "300"});
  ranks.wait_all(180s);
  for (const int r : {0, 1, 3}) {
    SCOPED_TRACE(r);
    EXPECT_TRUE(exited_with(ranks.status(r), 1)) << ranks.output(r);
    EXPECT_THAT(ranks.output(r), HasSubstr("lost rank 2")) << ranks.output(r);
    EXPECT_LT(ranks.ended(r) - ranks.ended(2), 10s);
  }
  EXPECT_THAT(ranks.output(0), HasSubstr("the first failure, found by rank"));
}

// A rank alive but silent: the others wait the timeout, then name it.
TEST(WorldOfRanksTimeout, ASilentRankIsNamedAfterTheTimeout) {
  ferry::testing::ScratchDir dir;
  Ranks ranks(dir, 2, {0, 1},
              {"--timeout", "3", "--die-rank", "1", "--die-after-ms", "0", "--die-how", "hang"});
  const auto start = Clock::now();
  ASSERT_TRUE(cli::testing::wait_for_exit(ranks.process(0), 120s)) << ranks.output(0);
  const auto elapsed = Clock::now() - start;
  EXPECT_TRUE(exited_with(ranks.status(0), 1)) << ranks.output(0);
  EXPECT_THAT(ranks.output(0), HasSubstr("rank 1 did not answer within 3 s"));
  EXPECT_GE(elapsed, 3s);
  EXPECT_TRUE(ranks.process(1).running());  // it hangs: killed when `ranks` goes
}

TEST(WorldOfRanksTimeout, ARankThatNeverArrivesIsNamedByTheOthers) {
  ferry::testing::ScratchDir dir;
  Ranks ranks(dir, 3, {0, 1}, {"--timeout", "3"});
  ranks.wait_all(120s);
  for (const int r : {0, 1}) {
    SCOPED_TRACE(r);
    EXPECT_TRUE(exited_with(ranks.status(r), 1)) << ranks.output(r);
    EXPECT_THAT(ranks.output(r),
                AllOf(HasSubstr("rank 2 of 3 did not arrive"), HasSubstr("within 3 s")));
  }
}

}  // namespace
}  // namespace ferry::engine
