#include "ferry/engine/world.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

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
//
// Gloo writes to its sockets with writev, so a write to a peer that died would raise SIGPIPE and
// kill this rank before the error could name the peer: join() ignores SIGPIPE (when no handler
// is installed), as Python does for torch.distributed.
//
// LibTorch 1.13's TCPStore listens on every interface whatever the host it is given (its server
// takes a port only; later LibTorch versions accept a socket bound by the caller). The Gloo
// pairs, which carry the tensors, bind to MASTER_ADDR when it is a loopback address or on rank 0
// (docs/scale.md, "Running on several processes").

namespace ferry::engine {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Gloo message tags: World's own messages never match a barrier's tokens.
constexpr int kDataTag = 0;
constexpr int kBarrierTag = 1;
// How often store waits look again (at most), and how long rank 0, failing, keeps its store for
// the others to read why.
constexpr milliseconds kStorePoll(100);
constexpr milliseconds kVerdictGrace(5000);
constexpr char kVerdictKey[] = "ferry/verdict";
// A value shown in an error in full up to this many bytes; longer ones around their difference.
constexpr std::size_t kShownBytes = 80;

std::string duration_text(milliseconds d) {
  if (d.count() % 1000 == 0) return fmt::format("{} s", d.count() / 1000);
  return fmt::format("{:g} s", static_cast<double>(d.count()) / 1000.0);
}

// "rank 2", "ranks 1 and 2", "ranks 1, 2 and 4".
std::string ranks_text(const std::vector<int>& ranks) {
  if (ranks.size() == 1) return fmt::format("rank {}", ranks[0]);
  std::string text = "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) text += i + 1 == ranks.size() ? " and " : ", ";
    text += std::to_string(ranks[i]);
  }
  return text;
}

// The message of an exception from c10d or Gloo: c10::Error without its C++ backtrace, one line.
std::string reason_of(const std::exception& e) {
  std::string text;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    text = c10_error->what_without_backtrace();
  } else {
    text = e.what();
  }
  if (const std::size_t eol = text.find('\n'); eol != std::string::npos) text.resize(eol);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return text;
}

std::string quote_text(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// `value` as an error shows it: whole when short, else the part around its first difference from
// `other`, with its length.
std::string shown(std::string_view value, std::string_view other) {
  if (value.size() <= kShownBytes) return quote_text(value);
  std::size_t diff = 0;
  while (diff < value.size() && diff < other.size() && value[diff] == other[diff]) ++diff;
  const std::size_t begin = diff > kShownBytes / 4 ? diff - kShownBytes / 4 : 0;
  const std::size_t end = std::min(value.size(), begin + kShownBytes);
  return fmt::format("{}{}{} ({} bytes, differing from byte {})", begin > 0 ? "…" : "",
                     quote_text(value.substr(begin, end - begin)), end < value.size() ? "…" : "",
                     value.size(), diff);
}

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

std::vector<std::uint8_t> to_bytes(std::string_view text) { return {text.begin(), text.end()}; }

class GlooWorld final : public World {
 public:
  GlooWorld(const WorldInfo& info, const WorldOptions& options) : info_(info), options_(options) {
    ignore_sigpipe();
    connect_store();
    arrive();
    connect_group();
    log_info("{}joined the world at {} ({} ranks, Gloo, timeout {})", me(), address(),
             info_.world_size, duration_text(options_.timeout));
  }

  int rank() const override { return info_.rank; }
  int size() const override { return info_.world_size; }

  void agree(std::string_view what, const std::string& value) override;
  void send(const at::Tensor& tensor, int dst) override;
  void recv(at::Tensor& tensor, int src) override;
  void send_bytes(std::string_view bytes, int dst) override;
  std::string recv_bytes(int src) override;
  void barrier() override;

 private:
  std::string address() const { return fmt::format("{}:{}", info_.master_addr, info_.master_port); }
  std::string me() const { return fmt::format("rank {} of {}: ", info_.rank, info_.world_size); }

  void connect_store();
  void arrive();
  void connect_group();

  // Records the first failure (every later call repeats it) and throws it.
  [[noreturn]] void fail(const std::string& message, ErrorFields fields = {}) {
    broken_ = message;
    throw DistributedError(message, std::move(fields));
  }
  void check_usable() const {
    if (!broken_.empty()) {
      throw DistributedError(
          fmt::format("{}the world is unusable after an earlier failure: {}", me(), broken_));
    }
  }
  void check_peer(int peer, std::string_view op) const {
    FERRY_CHECK(peer >= 0 && peer < size() && peer != rank(), InvalidArgument,
                "{}cannot {} rank {}: expected another rank in 0..{}", me(), op, peer, size() - 1);
  }

  // Runs a store operation; a failure of the store is a DistributedError (the store lives in
  // rank 0: when it fails for another rank, rank 0 is gone).
  template <class F>
  auto on_store(std::string_view doing, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const std::exception& e) {
      if (rank() == 0)
        fail(fmt::format("{}its rendezvous store failed while {}: {}", me(), doing, reason_of(e)));
      fail(fmt::format("{}lost rank 0, which holds the rendezvous store at {}, while {} (rank 0 "
                       "died?): {}",
                       me(), address(), doing, reason_of(e)),
           ErrorFields{.path = "rank 0"});
    }
  }

  // Polls until the keys <prefix><r> of every rank exist or `deadline` passes; the ranks whose
  // key is missing (empty: all there).
  std::vector<int> wait_for_ranks(const std::string& prefix, Clock::time_point deadline,
                                  std::string_view doing);
  // Fails with a failure of the store waits that every rank reports alike (Note [Ranks and
  // failures]): the first rank to find it publishes it, the others read it while they wait, and
  // rank 0 gives them a moment to read it before its store goes.
  [[noreturn]] void fail_with_verdict(const std::string& body, ErrorFields fields = {},
                                      std::optional<int> found_by = std::nullopt);
  // The world's first failure: the rank that found it and what it found.
  struct Verdict {
    int rank = 0;
    std::string body;
  };
  std::optional<Verdict> read_verdict();
  void publish_verdict(const std::string& body);  // unless there is one already

  // Starts a send or receive with `peer`.
  template <class Start>
  c10::intrusive_ptr<c10d::Work> post(std::string_view op, int peer, Start&& start) {
    try {
      return start();
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail_peer(op, peer, reason_of(e), /*timed_out=*/false);
    }
  }
  // Waits for a send or receive with `peer` until `until`.
  void wait(std::string_view op, int peer, c10d::Work& work, Clock::time_point until) {
    try {
      const auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now());
      if (work.wait(std::max(left, milliseconds(1)))) return;
      fail_peer(op, peer, "the wait was abandoned", /*timed_out=*/true);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      const std::string reason = reason_of(e);
      const bool timed_out =
          Clock::now() >= until - milliseconds(50) || reason.find("Timed out") != std::string::npos;
      fail_peer(op, peer, reason, timed_out);
    }
  }
  template <class Start>
  void exchange(std::string_view op, int peer, Start&& start) {
    const auto until = deadline();
    wait(op, peer, *post(op, peer, std::forward<Start>(start)), until);
  }

  // A failure seen by Gloo. It becomes the world's verdict when it is the first; when another
  // rank found one before, it is named as the cause (a rank that lost a peer which had lost
  // another, as in a pipeline). The store is left alone when the lost peer is rank 0: it holds
  // the store, and a stopped rank 0 would hold this rank up for another timeout.
  [[noreturn]] void fail_peer(std::string_view op, int peer, const std::string& reason,
                              bool timed_out) {
    const std::string body =
        timed_out ? fmt::format(
                        "rank {} did not answer within {} ({} rank {}); it hangs, is "
                        "stopped or its host is unreachable: {}",
                        peer, duration_text(options_.timeout), op, peer, reason)
                  : fmt::format(
                        "lost rank {} ({} rank {}): its connection closed (the rank "
                        "died?): {}",
                        peer, op, peer, reason);
    std::string cause;
    if (peer != 0) {
      try {
        if (const std::optional<Verdict> first = read_verdict()) {
          if (first->rank != rank()) {
            cause =
                fmt::format("; the first failure, found by rank {}: {}", first->rank, first->body);
          }
        } else {
          publish_verdict(body);
        }
      } catch (const std::exception&) {
        // The store is gone too: this failure stays this rank's own.
      }
    }
    fail(me() + body + cause, ErrorFields{.path = fmt::format("rank {}", peer)});
  }

  Clock::time_point deadline() const { return Clock::now() + options_.timeout; }

  WorldInfo info_;
  WorldOptions options_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  std::uint64_t agreements_ = 0;  // agree() calls so far: the number in its keys
  std::string broken_;            // the first failure, once there was one
};

void GlooWorld::connect_store() {
  c10d::TCPStoreOptions store_options;
  store_options.port = info_.master_port;
  store_options.isServer = info_.rank == 0;
  store_options.numWorkers = c10::nullopt;  // arrivals are counted by ferry's keys (arrive())
  store_options.waitWorkers = false;
  store_options.timeout = options_.timeout;
  // c10d gives up connecting up to a second before its timeout (it retries once a second):
  // attempts are repeated until the timeout itself has passed.
  const auto until = deadline();
  for (;;) {
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(info_.master_addr, store_options);
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
      if (Clock::now() + kStorePoll >= until) {
        throw DistributedError(
            fmt::format("{}cannot reach the master (rank 0) at {} within {}: {}", me(), address(),
                        duration_text(options_.timeout), reason),
            ErrorFields{.path = address(), .expected = "rank 0 listening", .actual = reason});
      }
    }
    std::this_thread::sleep_for(kStorePoll);
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
    fail(fmt::format("{}{} did not finish the agreement on {} within {}", me(), ranks_text(missing),
                     what, duration_text(options_.timeout)),
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

void GlooWorld::send(const at::Tensor& tensor, int dst) {
  check_usable();
  check_peer(dst, "send to");
  FERRY_CHECK(tensor.defined() && tensor.device().is_cpu(), InvalidArgument,
              "{}send to rank {}: expected a CPU tensor, got {}", me(), dst,
              tensor.defined() ? tensor.device().str() : "an undefined tensor");
  std::vector<at::Tensor> tensors{tensor.contiguous()};
  exchange("send to", dst, [&] { return group_->send(tensors, dst, kDataTag); });
}

void GlooWorld::recv(at::Tensor& tensor, int src) {
  check_usable();
  check_peer(src, "receive from");
  FERRY_CHECK(tensor.defined() && tensor.device().is_cpu(), InvalidArgument,
              "{}receive from rank {}: expected a CPU tensor to fill, got {}", me(), src,
              tensor.defined() ? tensor.device().str() : "an undefined tensor");
  std::vector<at::Tensor> tensors{tensor.is_contiguous() ? tensor : tensor.contiguous()};
  exchange("receive from", src, [&] { return group_->recv(tensors, src, kDataTag); });
  if (!tensors[0].is_same(tensor)) tensor.copy_(tensors[0]);
}

void GlooWorld::send_bytes(std::string_view bytes, int dst) {
  send(at::tensor({static_cast<std::int64_t>(bytes.size())}, at::kLong), dst);
  if (bytes.empty()) return;
  // Read only: Gloo sends from the caller's memory.
  send(at::from_blob(const_cast<char*>(bytes.data()), {static_cast<std::int64_t>(bytes.size())},
                     at::kByte),
       dst);
}

std::string GlooWorld::recv_bytes(int src) {
  at::Tensor length = at::empty({1}, at::kLong);
  recv(length, src);
  const std::int64_t n = length.item<std::int64_t>();
  if (n < 0) {
    fail(fmt::format("{}rank {} announced a message of {} bytes", me(), src, n),
         ErrorFields{.path = fmt::format("rank {}", src), .actual = std::to_string(n)});
  }
  std::string bytes(static_cast<std::size_t>(n), '\0');
  if (n == 0) return bytes;
  at::Tensor payload = at::from_blob(bytes.data(), {n}, at::kByte);
  recv(payload, src);
  return bytes;
}

void GlooWorld::barrier() {
  check_usable();
  if (size() == 1) return;
  // A token to and from every other rank (Note [Ranks and failures]): every receive is posted
  // before any send is waited for, so no order of arrival can deadlock.
  const auto until = deadline();
  std::vector<std::vector<at::Tensor>> inbox;
  std::vector<std::vector<at::Tensor>> outbox;
  std::vector<int> peers;
  for (int r = 0; r < size(); ++r) {
    if (r == rank()) continue;
    peers.push_back(r);
    inbox.push_back({at::zeros({1}, at::kByte)});
    outbox.push_back({at::ones({1}, at::kByte)});
  }
  std::vector<c10::intrusive_ptr<c10d::Work>> receives;
  std::vector<c10::intrusive_ptr<c10d::Work>> sends;
  for (std::size_t i = 0; i < peers.size(); ++i) {
    receives.push_back(post("a barrier with", peers[i],
                            [&] { return group_->recv(inbox[i], peers[i], kBarrierTag); }));
  }
  for (std::size_t i = 0; i < peers.size(); ++i) {
    sends.push_back(post("a barrier with", peers[i],
                         [&] { return group_->send(outbox[i], peers[i], kBarrierTag); }));
  }
  for (std::size_t i = 0; i < peers.size(); ++i) {
    wait("a barrier with", peers[i], *receives[i], until);
    wait("a barrier with", peers[i], *sends[i], until);
  }
}

}  // namespace

std::unique_ptr<World> World::join(const WorldInfo& info, const WorldOptions& options) {
  FERRY_CHECK(info.world_size >= 1 && info.world_size <= kMaxWorldSize, InvalidArgument,
              "world size {}: expected 1..{}", info.world_size, kMaxWorldSize);
  FERRY_CHECK(info.rank >= 0 && info.rank < info.world_size, InvalidArgument,
              "rank {}: expected a rank in 0..{} (world size {})", info.rank, info.world_size - 1,
              info.world_size);
  FERRY_CHECK(!info.master_addr.empty(), InvalidArgument, "rank {}: the master's address is empty",
              info.rank);
  FERRY_CHECK(info.master_port != 0, InvalidArgument,
              "rank {}: master port 0: expected a port in 1..65535 that every rank knows",
              info.rank);
  FERRY_CHECK(options.timeout.count() > 0, InvalidArgument,
              "distributed timeout {} ms: expected a positive time", options.timeout.count());
  return std::make_unique<GlooWorld>(info, options);
}

}  // namespace ferry::engine
