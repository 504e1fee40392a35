#pragma once
// A World of threads in one process, for tests of what runs over a World: each rank is a thread,
// messages go through in-memory mailboxes (clones of the tensors). Waits time out like the real
// one's, naming the peer.

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <variant>

#include "ferry/engine/world.h"

namespace ferry::engine::testing {

class LocalHub {
 public:
  explicit LocalHub(int size, std::chrono::milliseconds timeout = std::chrono::seconds(30))
      : size_(size), timeout_(timeout) {}
  int size() const { return size_; }

  using Message = std::variant<at::Tensor, std::string>;
  void post(int src, int dst, Message m) {
    {
      std::lock_guard<std::mutex> lock(m_);
      boxes_[{src, dst}].push_back(std::move(m));
    }
    cv_.notify_all();
  }
  Message take(int src, int dst) { return take(src, dst, timeout_); }
  Message take(int src, int dst, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(m_);
    auto& box = boxes_[{src, dst}];
    if (!cv_.wait_for(lock, timeout, [&] { return !box.empty(); })) {
      throw DistributedError(
          fmt::format("rank {}: no message from rank {} within the timeout", dst, src));
    }
    Message m = std::move(box.front());
    box.pop_front();
    return m;
  }
  std::size_t bytes_sent() const {
    std::lock_guard<std::mutex> lock(m_);
    return bytes_;
  }
  void count(std::size_t n) {
    std::lock_guard<std::mutex> lock(m_);
    bytes_ += n;
  }

 private:
  int size_;
  std::chrono::milliseconds timeout_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::map<std::pair<int, int>, std::deque<Message>> boxes_;
  std::size_t bytes_ = 0;
};

class LocalWorld final : public World {
 public:
  LocalWorld(std::shared_ptr<LocalHub> hub, int rank) : hub_(std::move(hub)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_->size(); }
  void agree(std::string_view, const std::string&) override {}
  void send(const at::Tensor& tensor, int dst) override {
    hub_->count(static_cast<std::size_t>(tensor.nbytes()));
    hub_->post(rank_, dst, tensor.to(at::kCPU).clone());
  }
  void recv(at::Tensor& tensor, int src) override {
    auto m = hub_->take(src, rank_);
    const at::Tensor* t = std::get_if<at::Tensor>(&m);
    if (t == nullptr) throw DistributedError("expected a tensor, got bytes");
    if (t->sizes() != tensor.sizes() || t->scalar_type() != tensor.scalar_type()) {
      throw DistributedError(
          fmt::format("rank {}: tensor from rank {} has the wrong shape/dtype", rank_, src));
    }
    tensor.copy_(*t);
  }
  void send_bytes(std::string_view bytes, int dst) override {
    hub_->count(bytes.size());
    hub_->post(rank_, dst, std::string(bytes));
  }
  std::string recv_bytes(int src) override { return recv_bytes(src, std::chrono::seconds(30)); }
  std::string recv_bytes(int src, std::chrono::milliseconds timeout) override {
    auto m = hub_->take(src, rank_, timeout);
    auto* s = std::get_if<std::string>(&m);
    if (s == nullptr) throw DistributedError("expected bytes, got a tensor");
    return std::move(*s);
  }
  void barrier() override {}

  // Tags ride in the mailbox key: (src, dst) per tag.
  class LocalPending final : public Pending {
   public:
    explicit LocalPending(std::function<void()> finish) : finish_(std::move(finish)) {}
    void wait() override {
      if (finish_) std::exchange(finish_, nullptr)();
    }

   private:
    std::function<void()> finish_;
  };
  std::unique_ptr<Pending> isend(const at::Tensor& tensor, int dst, int tag) override {
    hub_->count(static_cast<std::size_t>(tensor.nbytes()));
    hub_->post(tagged(rank_, tag), tagged(dst, tag), tensor.to(at::kCPU).clone());
    return std::make_unique<LocalPending>(nullptr);
  }
  std::unique_ptr<Pending> irecv(at::Tensor& tensor, int src, int tag) override {
    // The handle shares the caller's storage: filling it fills theirs.
    return std::make_unique<LocalPending>([this, tensor, src, tag]() mutable {
      auto m = hub_->take(tagged(src, tag), tagged(rank_, tag));
      const at::Tensor* t = std::get_if<at::Tensor>(&m);
      if (t == nullptr || t->sizes() != tensor.sizes() ||
          t->scalar_type() != tensor.scalar_type()) {
        throw DistributedError(
            fmt::format("rank {}: tagged tensor from rank {} has the wrong kind", rank_, src));
      }
      tensor.copy_(*t);
    });
  }

 private:
  // Mailbox keys for tagged messages: apart from untagged ones (ranks are < 1000).
  static int tagged(int rank, int tag) { return 1000 * (tag + 1) + rank; }

  std::shared_ptr<LocalHub> hub_;
  int rank_;
};

}  // namespace ferry::engine::testing
