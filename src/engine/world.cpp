#include "ferry/engine/world.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "engine/gloo_world.h"
#include "ferry/core/log.h"

// Note [Ranks and failures]
// A distributed run must never hang: every wait of a rank is bounded by WorldOptions::timeout
// (60 s by default; FERRY_DIST_TIMEOUT, which `ferry launch --timeout` sets, or a command's
// --timeout), and an error names the rank that failed to answer.
//
// Rendezvous. Rank 0 opens c10d's TCPStore on MASTER_ADDR:MASTER_PORT; a port in use fails at
// once, naming host:port. The other ranks connect to it, retrying until the timeout: a master
// that never answers is named with its address and the timeout. Each rank then counts itself in
// under a key of its own (ferry/rank/<r>; a count above 1 is a second process claiming the same
// RANK) and polls until every rank's key exists, so a rank that never arrives is named by the
// keys still missing when the timeout ends. Only then is the Gloo process group built over the
// same store (its own keys under ferry/gloo/), which connects every pair of ranks by TCP.
//
// Agreement. `agree` keys are numbered by call (ferry/agree/<n>/<rank>), not by what is agreed,
// so repeated agreements on the same thing work and ranks running different programs (which ask
// different questions at the same step) get an error saying so instead of a timeout. Each rank
// waits until it has read every value and until every rank has (ferry/agree/<n>/read/<rank>):
// rank 0 holds the store, and a rank 0 that left early would take the values with it.
//
// How death is seen. A rank that dies (crash, SIGKILL, exit) has its sockets closed by the
// kernel, so Gloo sees the connection close at once and every send or recv pending with that
// rank ends with an exception: the rank waiting on it names the peer within milliseconds,
// whatever the timeout. A rank that is alive but silent (stopped, spinning, or a host that
// vanished without closing anything) is found by the timeout of the wait (Work::wait). Waits on
// the store (rendezvous, agree) see only timeouts, except the death of rank 0, whose store goes
// with it. barrier() is built from sends and receives with every other rank, not Gloo's own
// barrier, so a failure there names the rank too. After a failure the world is unusable: every
// later call repeats the first error.
//
// One verdict. Ranks start at different moments, so their store waits time out at different
// moments too; if rank 0 gave up first and left, its store would go with it and the others would
// report "lost rank 0" instead of the rank that never came. So the first rank to give up writes
// its finding under ferry/verdict, every rank still waiting reads it and fails with it, and rank
// 0, before it fails, waits (at most 5 s) until every rank that arrived has read the verdict.
// Leaving works the same way: each rank's World marks ferry/left/<rank> when it is destroyed, and
// rank 0's waits (at most 5 s) for the others' marks, so a rank 0 that finishes first does not
// take the store from ranks still using it.
//
// Gloo writes to its sockets with writev, so a write to a peer that died would raise SIGPIPE and
// kill this rank before the error could name the peer: join() ignores SIGPIPE (when no handler
// is installed), as Python does for torch.distributed.
//
// Note [A port nobody else can take]
// A launcher that picks a free port and hands it to rank 0 races every other program on the
// host: between its check and rank 0's bind (a second or more: rank 0 loads LibTorch first) the
// kernel may give the same port to anyone binding port 0, or to an outgoing connection, and two
// launchers may pick the same one, so ranks of one run can even join another run's store. So
// `ferry launch` (when not given --master-port) sets MASTER_PORT=0 and FERRY_PORT_PIPE: rank 0
// opens its store on port 0 (the kernel's choice, bound at once) and writes the port to the pipe
// as a decimal line; the launcher relays it to every other rank's pipe, and they read it before
// connecting, within the timeout. A rank 0 that ended without opening its store closes its pipe,
// so the others see the end of theirs and say so at once. Commands that never join a world
// (`ferry launch -- plan`) never touch the pipe.
//
// LibTorch 1.13's TCPStore listens on every interface whatever the host it is given (its server
// takes a port only; later LibTorch versions accept a socket bound by the caller). The Gloo
// pairs, which carry the tensors, bind to MASTER_ADDR when it is a loopback address or on rank 0
// (docs/scale.md, "Running on several processes").

namespace ferry::engine {
namespace detail {
namespace {

bool is_loopback(std::string_view host) {
  return host == "localhost" || host.starts_with("127.") || host == "::1";
}

// Gloo's transport: the interface GLOO_SOCKET_IFNAME names (as torch.distributed honours it);
// else MASTER_ADDR itself where this rank owns that address (a loopback run, or rank 0); else the
// address this host's name resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const WorldInfo& info) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (info.rank == 0 || is_loopback(info.master_addr)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname(info.master_addr);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

void ignore_sigpipe() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
}

// How soon a rank tries again to reach the master after c10d gave up early (each attempt logs a
// line of c10d's own).
constexpr milliseconds kConnectRetry(250);

}  // namespace

GlooWorld::GlooWorld(const WorldInfo& info, const WorldOptions& options)
    : info_(info), options_(options) {
  ignore_sigpipe();
  connect_store();
  arrive();
  connect_group();
  log_info("{}joined the world at {} ({} ranks, Gloo, timeout {})", me(), address(),
           info_.world_size, duration_text(options_.timeout));
}

GlooWorld::~GlooWorld() {
  if (!broken_.empty() || !store_) return;  // failing: no waiting
  try {
    store_->set(fmt::format("ferry/left/{}", rank()), to_bytes("1"));
    if (rank() != 0) return;
    std::vector<std::string> others;
    for (int r = 1; r < size(); ++r) others.push_back(fmt::format("ferry/left/{}", r));
    const auto until = Clock::now() + std::min<milliseconds>(options_.timeout, kVerdictGrace);
    while (!store_->check(others) && Clock::now() < until) {
      std::this_thread::sleep_for(kStorePoll / 10);
    }
  } catch (const std::exception&) {
    // Leaving a world whose store is gone: nothing to wait for.
  }
}

void GlooWorld::announce_port() {
  const std::string line = fmt::format("{}\n", info_.master_port);
  // A few bytes: one write, atomic on a pipe. A launcher that is gone is no failure of ours.
  [[maybe_unused]] const ssize_t n = ::write(info_.port_pipe, line.data(), line.size());
}

std::uint16_t GlooWorld::await_port(Clock::time_point until) {
  std::string text;
  for (;;) {
    const auto left = std::chrono::ceil<milliseconds>(until - Clock::now());
    if (left.count() <= 0) {
      throw DistributedError(
          fmt::format("{}rank 0 did not open its rendezvous store at {} within {} (the launcher "
                      "relays its port)",
                      me(), info_.master_addr, duration_text(options_.timeout)),
          ErrorFields{.path = "rank 0", .expected = "rank 0 listening"});
    }
    pollfd fd{.fd = info_.port_pipe, .events = POLLIN, .revents = 0};
    const int ready =
        ::poll(&fd, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1'000'000)));
    if (ready < 0 && errno != EINTR) {
      throw DistributedError(fmt::format("{}cannot wait for the port of rank 0's store: {}", me(),
                                         std::strerror(errno)));
    }
    if (ready <= 0) continue;
    char buffer[16];
    const ssize_t n = ::read(info_.port_pipe, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) text.append(buffer, static_cast<std::size_t>(n));
    const std::size_t end = text.find('\n');
    if (end != std::string::npos || n <= 0 || text.size() > 8) {
      unsigned port = 0;
      const char* last = text.data() + (end == std::string::npos ? text.size() : end);
      const auto [ptr, ec] = std::from_chars(text.data(), last, port);
      if (end != std::string::npos && ec == std::errc() && ptr == last && port >= 1 &&
          port <= 65535) {
        return static_cast<std::uint16_t>(port);
      }
      throw DistributedError(
          fmt::format("{}rank 0 ended or failed before it opened its rendezvous store at {} (the "
                      "launcher relayed {})",
                      me(), info_.master_addr, text.empty() ? "no port" : "'" + text + "'"),
          ErrorFields{.path = "rank 0", .expected = "a port", .actual = text});
    }
  }
}

void GlooWorld::connect_store() {
  const bool any_port = info_.master_port == 0;  // Note [A port nobody else can take]
  // c10d gives up connecting up to a second before its timeout (it retries once a second):
  // attempts are repeated, each given the time left, until the timeout itself has passed.
  const auto until = deadline();
  if (any_port && info_.rank != 0) info_.master_port = await_port(until);
  c10d::TCPStoreOptions store_options;
  store_options.port = info_.master_port;
  store_options.isServer = info_.rank == 0;
  store_options.numWorkers = c10::nullopt;  // arrivals are counted by ferry's keys (arrive())
  store_options.waitWorkers = false;
  for (;;) {
    store_options.timeout =
        std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(until - Clock::now()));
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(info_.master_addr, store_options);
      store_->setTimeout(options_.timeout);  // every later wait on the store
      if (any_port && info_.rank == 0) {
        info_.master_port = store_->getPort();
        announce_port();
      }
      return;
    } catch (const std::exception& e) {
      const std::string reason = reason_of(e);
      if (info_.rank == 0) {
        const bool in_use = reason.find("in use") != std::string::npos;
        throw DistributedError(
            fmt::format("{}cannot open the rendezvous store on {} (MASTER_ADDR:MASTER_PORT){}: {}",
                        me(), address(), in_use ? ": the port is in use" : "", reason),
            ErrorFields{.path = address(), .expected = "a free port", .actual = reason});
      }
      if (Clock::now() + kConnectRetry >= until) {
        throw DistributedError(
            fmt::format("{}cannot reach the master (rank 0) at {} within {}: {}", me(), address(),
                        duration_text(options_.timeout), reason),
            ErrorFields{.path = address(), .expected = "rank 0 listening", .actual = reason});
      }
    }
    std::this_thread::sleep_for(kConnectRetry);
  }
}

std::vector<int> GlooWorld::wait_for_ranks(const std::string& prefix, Clock::time_point until,
                                           std::string_view doing) {
  std::vector<std::string> keys;
  for (int r = 0; r < size(); ++r) keys.push_back(prefix + std::to_string(r));
  milliseconds pause(1);
  while (!on_store(doing, [&] { return store_->check(keys); })) {
    if (const std::optional<Verdict> first = on_store(doing, [&] { return read_verdict(); })) {
      fail_with_verdict(first->body, ErrorFields{}, first->rank);
    }
    const auto now = Clock::now();
    if (now >= until) {
      std::vector<int> missing;
      for (int r = 0; r < size(); ++r) {
        if (!on_store(doing, [&] { return store_->check({keys[static_cast<std::size_t>(r)]}); })) {
          missing.push_back(r);
        }
      }
      if (!missing.empty()) return missing;
      break;  // the last ones came meanwhile
    }
    std::this_thread::sleep_for(
        std::min<milliseconds>(pause, std::chrono::duration_cast<milliseconds>(until - now)));
    pause = std::min(pause * 2, kStorePoll);
  }
  return {};
}

std::optional<GlooWorld::Verdict> GlooWorld::read_verdict() {
  if (!store_->check({kVerdictKey})) return std::nullopt;
  const std::vector<std::uint8_t> bytes = store_->get(kVerdictKey);
  const std::string text(bytes.begin(), bytes.end());
  const std::size_t eol = text.find('\n');
  Verdict verdict;
  std::from_chars(text.data(), text.data() + std::min(eol, text.size()), verdict.rank);
  verdict.body = eol == std::string::npos ? text : text.substr(eol + 1);
  return verdict;
}

void GlooWorld::publish_verdict(const std::string& body) {
  // Two ranks may both find the store without one: the later one wins, and either is true.
  if (!store_->check({kVerdictKey})) {
    store_->set(kVerdictKey, to_bytes(fmt::format("{}\n{}", rank(), body)));
  }
}

void GlooWorld::fail_with_verdict(const std::string& body, ErrorFields fields,
                                  std::optional<int> found_by) {
  try {
    publish_verdict(body);
    store_->set(fmt::format("{}/read/{}", kVerdictKey, rank()), to_bytes("1"));
    if (rank() == 0) {
      // The ranks that arrived read the verdict before the store goes with this process.
      std::vector<std::string> readers;
      for (int r = 1; r < size(); ++r) {
        if (store_->check({fmt::format("ferry/rank/{}", r)})) {
          readers.push_back(fmt::format("{}/read/{}", kVerdictKey, r));
        }
      }
      const auto until = Clock::now() + std::min<milliseconds>(options_.timeout, kVerdictGrace);
      while (!store_->check(readers) && Clock::now() < until) {
        std::this_thread::sleep_for(kStorePoll / 10);
      }
    }
  } catch (const std::exception&) {
    // The store is gone: the verdict stays this rank's own.
  }
  const std::string by =
      found_by && *found_by != rank() ? fmt::format(" (found by rank {})", *found_by) : "";
  fail(me() + body + by, std::move(fields));
}

void GlooWorld::arrive() {
  const std::int64_t count =
      on_store("arriving", [&] { return store_->add(fmt::format("ferry/rank/{}", rank()), 1); });
  if (count > 1) {
    fail(fmt::format("{}another process has already joined as rank {} at {} (check RANK)", me(),
                     rank(), address()),
         ErrorFields{.path = fmt::format("rank {}", rank())});
  }
  const std::vector<int> missing = wait_for_ranks("ferry/rank/", deadline(), "waiting for ranks");
  if (!missing.empty()) {
    fail_with_verdict(
        fmt::format("{} of {} did not arrive at the rendezvous on {} within {}",
                    ranks_text(missing), size(), address(), duration_text(options_.timeout)),
        ErrorFields{
            .path = ranks_text(missing),
            .expected = fmt::format("{} ranks", size()),
            .actual = fmt::format("{} arrived", size() - static_cast<int>(missing.size()))});
  }
}

void GlooWorld::connect_group() {
  try {
    auto group_options = c10d::ProcessGroupGloo::Options::create(options_.timeout);
    group_options->devices.push_back(gloo_device(info_));
    group_options->threads = 1;  // only its collectives use threads; World sends and receives
    group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("ferry/gloo", store_), rank(), size(),
        group_options);
  } catch (const std::exception& e) {
    fail(fmt::format("{}cannot connect to the other ranks over Gloo within {}: {}", me(),
                     duration_text(options_.timeout), reason_of(e)));
  }
}

void GlooWorld::agree(std::string_view what, const std::string& value) {
  check_usable();
  const std::string prefix = fmt::format("ferry/agree/{}/", agreements_++);
  const std::string doing = fmt::format("agreeing on {}", what);
  // Published as "<length of what>:<what><value>".
  const std::string published = fmt::format("{}:{}{}", what.size(), what, value);
  on_store(doing, [&] { store_->set(prefix + std::to_string(rank()), to_bytes(published)); });
  std::vector<int> missing = wait_for_ranks(prefix, deadline(), doing);
  if (!missing.empty()) {
    fail_with_verdict(fmt::format("{} did not reach the agreement on {} within {} (died, hangs, "
                                  "or runs another program)",
                                  ranks_text(missing), what, duration_text(options_.timeout)),
                      ErrorFields{.path = std::string(what)});
  }
  std::vector<std::pair<std::string, std::string>> answers;  // {what, value} per rank
  for (int r = 0; r < size(); ++r) {
    const std::vector<std::uint8_t> bytes =
        on_store(doing, [&] { return store_->get(prefix + std::to_string(r)); });
    const std::string text(bytes.begin(), bytes.end());
    const std::size_t colon = text.find(':');
    std::size_t length = 0;
    std::from_chars(text.data(), text.data() + std::min(colon, text.size()), length);
    FERRY_ASSERT(colon != std::string::npos && colon + 1 + length <= text.size(),
                 "agreement {} of rank {} is malformed", prefix, r);
    answers.emplace_back(text.substr(colon + 1, length), text.substr(colon + 1 + length));
  }
  // Everyone has read before anyone leaves (Note [Ranks and failures]).
  on_store(doing, [&] { store_->set(prefix + "read/" + std::to_string(rank()), to_bytes("1")); });
  missing = wait_for_ranks(prefix + "read/", deadline(), doing);
  if (!missing.empty()) {
    fail_with_verdict(fmt::format("{} did not finish the agreement on {} within {}",
                                  ranks_text(missing), what, duration_text(options_.timeout)),
                      ErrorFields{.path = std::string(what)});
  }

  const auto& [what0, value0] = answers[0];
  std::vector<int> differing;
  for (int r = 1; r < size(); ++r) {
    const auto& [what_r, value_r] = answers[static_cast<std::size_t>(r)];
    if (what_r != what0) {
      throw DistributedError(
          fmt::format("{}the ranks run different programs: at agreement {} rank {} checks {} "
                      "where rank 0 checks {}",
                      me(), agreements_ - 1, r, quote_text(what_r), quote_text(what0)),
          ErrorFields{.path = std::string(what), .expected = what0, .actual = what_r});
    }
    if (value_r != value0) differing.push_back(r);
  }
  if (differing.empty()) return;
  std::string values = fmt::format("rank 0 has {}", shown(value0, answers[differing[0]].second));
  for (const int r : differing) {
    values += fmt::format("; rank {} has {}", r,
                          shown(answers[static_cast<std::size_t>(r)].second, value0));
  }
  throw DistributedError(
      fmt::format("{}{} {} from rank 0 on {}: {}", me(), ranks_text(differing),
                  differing.size() == 1 ? "differs" : "differ", what, values),
      ErrorFields{.path = std::string(what),
                  .expected = value0,
                  .actual = answers[static_cast<std::size_t>(differing[0])].second});
}

}  // namespace detail

std::unique_ptr<World> World::join(const WorldInfo& info, const WorldOptions& options) {
  FERRY_CHECK(info.world_size >= 1 && info.world_size <= kMaxWorldSize, InvalidArgument,
              "world size {}: expected 1..{}", info.world_size, kMaxWorldSize);
  FERRY_CHECK(info.rank >= 0 && info.rank < info.world_size, InvalidArgument,
              "rank {}: expected a rank in 0..{} (world size {})", info.rank, info.world_size - 1,
              info.world_size);
  FERRY_CHECK(!info.master_addr.empty(), InvalidArgument, "rank {}: the master's address is empty",
              info.rank);
  FERRY_CHECK(info.master_port != 0 || info.port_pipe >= 0, InvalidArgument,
              "rank {}: master port 0: expected a port in 1..65535 that every rank knows, or a "
              "launcher's port pipe",
              info.rank);
  FERRY_CHECK(options.timeout.count() > 0, InvalidArgument,
              "distributed timeout {} ms: expected a positive time", options.timeout.count());
  return std::make_unique<detail::GlooWorld>(info, options);
}

}  // namespace ferry::engine
