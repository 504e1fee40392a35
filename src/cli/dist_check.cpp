// `ferry dist-check`: a diagnostic of a distributed run (issue 16), hidden from --help. Every rank
// joins the world its launcher describes (`ferry launch` or torchrun), agrees with the others on a
// fingerprint, passes a tensor and a message round the ring of ranks, meets them at a barrier and
// prints one line. Its other flags make one rank misbehave on purpose (differ, never arrive, die,
// hang) so that tests can check what the others report (Note [Ranks and failures]).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>
#include <unistd.h>

#include "cli/commands.h"
#include "ferry/core/error.h"
#include "ferry/engine/world.h"

namespace ferry::cli {
namespace {

struct DistCheckOptions {
  std::string fingerprint = "ferry dist-check";
  int mismatch_rank = -1;  // this rank agrees on another fingerprint
  int absent_rank = -1;    // this rank never joins (it sleeps until killed)
  int die_rank = -1;       // the rank --die-after-ms applies to (-1: the last)
  std::int64_t die_after_ms = -1;
  std::string die_how = "kill";  // kill (SIGKILL) | exit (_exit(1)) | hang (alive, silent)
  double timeout_s = 0;          // 0: FERRY_DIST_TIMEOUT, else 60 s
  std::int64_t elements = 1024;  // floats passed round the ring
  std::int64_t linger_ms = 0;    // stay alive this long after printing (signal tests)
  bool ignore_sigterm = false;   // a rank that must be killed (the launcher's grace period)
};

[[noreturn]] void sleep_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

// After agreeing, before its part of the ring: the others are waiting on this rank.
void misbehave(const DistCheckOptions& o, int rank) {
  std::this_thread::sleep_for(std::chrono::milliseconds(o.die_after_ms));
  std::fprintf(stderr, "dist-check: rank %d: %s now (--die-how %s)\n", rank,
               o.die_how == "hang" ? "hanging" : "dying", o.die_how.c_str());
  std::fflush(stderr);
  if (o.die_how == "exit") ::_exit(1);
  if (o.die_how == "hang") sleep_forever();
  std::raise(SIGKILL);
}

// Rank r's part of the ring: rank 0 sends first, every other rank receives first, so the ring
// turns once with blocking sends.
template <class Send, class Receive>
void ring_step(int rank, Send&& send, Receive&& receive) {
  if (rank == 0) {
    send();
    receive();
  } else {
    receive();
    send();
  }
}

int run_dist_check(const DistCheckOptions& o) {
  const std::optional<engine::WorldInfo> info = engine::world_from_environment();
  FERRY_CHECK(info.has_value(), InvalidArgument,
              "dist-check needs a launcher's environment, and WORLD_SIZE is not set: run it as "
              "`ferry launch --nproc N -- dist-check` or under torchrun");
  engine::WorldOptions world_options = engine::world_options_from_environment();
  if (o.timeout_s > 0) {
    world_options.timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(o.timeout_s * 1000));
  }
  const int rank = info->rank;
  if (o.ignore_sigterm) std::signal(SIGTERM, SIG_IGN);
  if (rank == o.absent_rank) sleep_forever();

  const std::unique_ptr<engine::World> world = engine::World::join(*info, world_options);
  const int n = world->size();
  world->agree("fingerprint", rank == o.mismatch_rank
                                  ? fmt::format("{}/rank {}", o.fingerprint, rank)
                                  : o.fingerprint);
  const int victim = o.die_rank >= 0 ? o.die_rank : n - 1;
  if (o.die_after_ms >= 0 && rank == victim) misbehave(o, rank);

  std::string ring = "no ring (one rank)";
  if (n > 1) {
    const int next = (rank + 1) % n;
    const int prev = (rank + n - 1) % n;
    const auto values = [&](int r) { return at::arange(o.elements, at::kFloat) + 1000.0 * r; };
    at::Tensor got = at::empty({o.elements}, at::kFloat);
    ring_step(
        rank, [&] { world->send(values(rank), next); }, [&] { world->recv(got, prev); });
    FERRY_CHECK(at::equal(got, values(prev)), engine::DistributedError,
                "rank {}: the {} floats from rank {} are not the ones it sent", rank, o.elements,
                prev);
    std::string text;
    ring_step(
        rank, [&] { world->send_bytes(fmt::format("hello from rank {}", rank), next); },
        [&] { text = world->recv_bytes(prev); });
    FERRY_CHECK(text == fmt::format("hello from rank {}", prev), engine::DistributedError,
                "rank {}: expected 'hello from rank {}' from rank {}, got '{}'", rank, prev, prev,
                text);
    // The corners: an empty message, and a tensor received into a view that is not contiguous.
    ring_step(
        rank, [&] { world->send_bytes("", next); }, [&] { text = world->recv_bytes(prev); });
    FERRY_CHECK(text.empty(), engine::DistributedError,
                "rank {}: expected an empty message from rank {}, got {} bytes", rank, prev,
                text.size());
    const auto small = [](int r) { return at::arange(6, at::kLong).reshape({2, 3}) + 10 * r; };
    at::Tensor transposed = at::empty({3, 2}, at::kLong).t();
    ring_step(
        rank, [&] { world->send(small(rank), next); }, [&] { world->recv(transposed, prev); });
    FERRY_CHECK(at::equal(transposed, small(prev)), engine::DistributedError,
                "rank {}: the 2x3 tensor from rank {} did not arrive in a transposed view", rank,
                prev);
    ring = fmt::format("{} floats and a message from rank {}", o.elements, prev);
  }
  // The same question again: agreements are numbered, not named.
  world->agree("fingerprint", o.fingerprint);
  world->barrier();
  std::printf("dist-check: rank %d of %d ok (pid %d): fingerprint agreed, %s, barrier passed\n",
              rank, n, static_cast<int>(::getpid()), ring.c_str());
  std::fflush(stdout);
  if (o.linger_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.linger_ms));
  return 0;
}

}  // namespace

void add_dist_check_command(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand("dist-check", std::string(kDistCheckDescription));
  cmd->group("");  // a diagnostic: hidden from --help
  auto o = std::make_shared<DistCheckOptions>();
  cmd->add_option("--fingerprint", o->fingerprint, "What every rank must agree on");
  cmd->add_option("--mismatch-rank", o->mismatch_rank, "This rank agrees on another fingerprint");
  cmd->add_option("--absent-rank", o->absent_rank, "This rank never joins (sleeps until killed)");
  cmd->add_option("--die-rank", o->die_rank,
                  "The rank --die-after-ms applies to (default: the last)");
  cmd->add_option("--die-after-ms", o->die_after_ms,
                  "After agreeing, that rank waits this long, then dies or hangs (--die-how)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--die-how", o->die_how, "kill (SIGKILL), exit (status 1) or hang")
      ->check(CLI::IsMember({"kill", "exit", "hang"}));
  cmd->add_option("--timeout", o->timeout_s,
                  "Seconds every wait may take (default: FERRY_DIST_TIMEOUT, else 60)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--elements", o->elements, "Floats passed round the ring")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 28));
  cmd->add_option("--linger-ms", o->linger_ms, "Stay alive this long after the check")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--ignore-sigterm", o->ignore_sigterm, "Ignore SIGTERM (only SIGKILL ends it)");
  cmd->callback([&runner, o] { runner = [o] { return run_dist_check(*o); }; });
}

}  // namespace ferry::cli
