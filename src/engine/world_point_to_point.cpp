// World's messages between two ranks and its barrier, over Gloo (Note [Ranks and failures] in
// world.cpp): every wait bounded, every failure naming the peer.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <memory>
#include <utility>

#include "engine/gloo_world.h"

namespace ferry::engine::detail {

void GlooWorld::fail_peer(std::string_view op, int peer, const std::string& reason,
                          bool timed_out) {
  std::string body;
  if (timed_out) {
    body = fmt::format(
        "rank {} did not answer within {} ({} rank {}); it hangs, is stopped or its "
        "host is unreachable: {}",
        peer, duration_text(options_.timeout), op, peer, reason);
  } else {
    body = fmt::format("lost rank {} ({} rank {}): its connection closed (the rank died?): {}",
                       peer, op, peer, reason);
  }
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

void GlooWorld::send(const at::Tensor& tensor, int dst) {
  check_usable();
  check_peer(dst, "send to");
  FERRY_CHECK(tensor.defined() && tensor.device().is_cpu(), InvalidArgument,
              "{}send to rank {}: expected a CPU tensor, got {}", me(), dst,
              tensor.defined() ? tensor.device().str() : "an undefined tensor");
  std::vector<at::Tensor> tensors{tensor.contiguous()};
  exchange("send to", dst, [&] { return group_->send(tensors, dst, kDataTag); });
}

void GlooWorld::recv(at::Tensor& tensor, int src) { recv_until(tensor, src, deadline()); }

void GlooWorld::recv_until(at::Tensor& tensor, int src, Clock::time_point until) {
  check_usable();
  check_peer(src, "receive from");
  FERRY_CHECK(tensor.defined() && tensor.device().is_cpu(), InvalidArgument,
              "{}receive from rank {}: expected a CPU tensor to fill, got {}", me(), src,
              tensor.defined() ? tensor.device().str() : "an undefined tensor");
  std::vector<at::Tensor> tensors{tensor.is_contiguous() ? tensor : tensor.contiguous()};
  exchange_until("receive from", src, until, [&] { return group_->recv(tensors, src, kDataTag); });
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

std::string GlooWorld::recv_bytes(int src) { return recv_bytes(src, options_.timeout); }

std::string GlooWorld::recv_bytes(int src, std::chrono::milliseconds timeout) {
  at::Tensor length = at::empty({1}, at::kLong);
  // Waiting for a message may take `timeout` (a pipeline stage idles between requests); once it
  // is announced, the payload follows within the world's timeout.
  const auto now = Clock::now();
  const auto until =
      timeout >= Clock::time_point::max() - now ? Clock::time_point::max() : now + timeout;
  recv_until(length, src, until);
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

// A send or receive in flight (World::isend, irecv): wait() bounds it by the world's timeout.
class GlooWorld::GlooPending final : public World::Pending {
 public:
  GlooPending(GlooWorld& world, std::string_view op, int peer, std::vector<at::Tensor> buffers,
              at::Tensor target)
      : world_(world),
        op_(op),
        peer_(peer),
        buffers_(std::move(buffers)),
        target_(std::move(target)) {}
  void start(c10::intrusive_ptr<c10d::Work> work) { work_ = std::move(work); }
  std::vector<at::Tensor>& buffers() { return buffers_; }
  void wait() override {
    if (!work_) return;
    const c10::intrusive_ptr<c10d::Work> work = std::exchange(work_, {});
    world_.wait(op_, peer_, *work, world_.deadline());
    if (target_.defined() && !buffers_[0].is_same(target_)) target_.copy_(buffers_[0]);
  }

 private:
  GlooWorld& world_;
  std::string op_;
  int peer_;
  std::vector<at::Tensor> buffers_;
  at::Tensor target_;  // a receive's tensor, filled from buffers_[0] when that is a copy
  c10::intrusive_ptr<c10d::Work> work_;
};

std::unique_ptr<World::Pending> GlooWorld::isend(const at::Tensor& tensor, int dst, int tag) {
  check_usable();
  check_peer(dst, "send to");
  FERRY_CHECK(tensor.defined() && tensor.device().is_cpu() && tag >= 0, InvalidArgument,
              "{}send to rank {}: expected a CPU tensor and a tag ≥ 0, got {} and tag {}", me(),
              dst, tensor.defined() ? tensor.device().str() : "an undefined tensor", tag);
  auto pending = std::make_unique<GlooPending>(
      *this, "send to", dst, std::vector<at::Tensor>{tensor.contiguous()}, at::Tensor());
  pending->start(post("send to", dst,
                      [&] { return group_->send(pending->buffers(), dst, kFirstUserTag + tag); }));
  return pending;
}

std::unique_ptr<World::Pending> GlooWorld::irecv(at::Tensor& tensor, int src, int tag) {
  check_usable();
  check_peer(src, "receive from");
  FERRY_CHECK(tensor.defined() && tensor.device().is_cpu() && tag >= 0, InvalidArgument,
              "{}receive from rank {}: expected a CPU tensor to fill and a tag ≥ 0, got {} and "
              "tag {}",
              me(), src, tensor.defined() ? tensor.device().str() : "an undefined tensor", tag);
  auto pending = std::make_unique<GlooPending>(
      *this, "receive from", src,
      std::vector<at::Tensor>{tensor.is_contiguous() ? tensor : tensor.contiguous()}, tensor);
  pending->start(post("receive from", src,
                      [&] { return group_->recv(pending->buffers(), src, kFirstUserTag + tag); }));
  return pending;
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

}  // namespace ferry::engine::detail
