#pragma once
// World over LibTorch's c10d (Note [Ranks and failures] in world.cpp): a TCPStore for rendezvous,
// agreement and the world's verdict, a Gloo process group for tensors. world.cpp joins and
// agrees; world_point_to_point.cpp sends, receives and meets at barriers.

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/world_text.h"
#include "ferry/engine/world.h"

namespace ferry::engine::detail {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Gloo message tags: World's own messages never match a barrier's tokens.
inline constexpr int kDataTag = 0;
inline constexpr int kBarrierTag = 1;
// World::isend/irecv's tag t travels as kFirstUserTag + t.
inline constexpr int kFirstUserTag = 2;
// How often store waits look again (at most), and how long rank 0, failing, keeps its store for
// the others to read why.
inline constexpr milliseconds kStorePoll(100);
inline constexpr milliseconds kVerdictGrace(5000);
inline constexpr char kVerdictKey[] = "ferry/verdict";

inline std::vector<std::uint8_t> to_bytes(std::string_view text) {
  return {text.begin(), text.end()};
}

// One rank's membership of the world over c10d.
class GlooWorld final : public World {
 public:
  // Rendezvous (world.cpp).
  GlooWorld(const WorldInfo& info, const WorldOptions& options);
  // Leaving: rank 0, which holds the store, waits a moment for the others to leave first.
  ~GlooWorld() override;
  GlooWorld(const GlooWorld&) = delete;
  GlooWorld& operator=(const GlooWorld&) = delete;

  int rank() const override { return info_.rank; }
  int size() const override { return info_.world_size; }

  void agree(std::string_view what, const std::string& value) override;
  void send(const at::Tensor& tensor, int dst) override;
  void recv(at::Tensor& tensor, int src) override;
  void send_bytes(std::string_view bytes, int dst) override;
  std::string recv_bytes(int src) override;
  std::string recv_bytes(int src, std::chrono::milliseconds timeout) override;
  void barrier() override;
  std::unique_ptr<Pending> isend(const at::Tensor& tensor, int dst, int tag) override;
  std::unique_ptr<Pending> irecv(at::Tensor& tensor, int src, int tag) override;

 private:
  std::string address() const { return fmt::format("{}:{}", info_.master_addr, info_.master_port); }
  std::string me() const { return fmt::format("rank {} of {}: ", info_.rank, info_.world_size); }

  void connect_store();
  // Note [A port nobody else can take]: rank 0 writes the port its store bound to the launcher's
  // pipe; the others read it there, until `until`.
  void announce_port();
  std::uint16_t await_port(Clock::time_point until);
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
    exchange_until(op, peer, deadline(), std::forward<Start>(start));
  }
  template <class Start>
  void exchange_until(std::string_view op, int peer, Clock::time_point until, Start&& start) {
    wait(op, peer, *post(op, peer, std::forward<Start>(start)), until);
  }
  void recv_until(at::Tensor& tensor, int src, Clock::time_point until);
  class GlooPending;

  // A failure seen by Gloo. It becomes the world's verdict when it is the first; when another
  // rank found one before, it is named as the cause (a rank that lost a peer which had lost
  // another, as in a pipeline). The store is left alone when the lost peer is rank 0: it holds
  // the store, and a stopped rank 0 would hold this rank up for another timeout.
  [[noreturn]] void fail_peer(std::string_view op, int peer, const std::string& reason,
                              bool timed_out);

  Clock::time_point deadline() const { return Clock::now() + options_.timeout; }

  WorldInfo info_;
  WorldOptions options_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  std::uint64_t agreements_ = 0;  // agree() calls so far: the number in its keys
  std::string broken_;            // the first failure, once there was one
};

}  // namespace ferry::engine::detail
