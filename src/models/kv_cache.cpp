#include "ferry/models/kv_cache.h"

#include <atomic>
#include <utility>
#include <vector>

#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/shape.h"

namespace ferry::models {
namespace {

// `history` where `now` lives, so the concatenation runs on the layer's execution device.
at::Tensor follow(const at::Tensor& history, const at::Tensor& now) {
  const auto where = placement_of(now);
  if (!where || placement_of(history) == where) return history;
  return move_to(history, *where);
}

// `t` with `n` zero positions before its own along dim 2.
at::Tensor pad_positions(const at::Tensor& t, std::int64_t n) {
  if (n == 0) return t;
  std::vector<std::int64_t> sizes = t.sizes().vec();
  sizes[2] = n;
  return at::cat({at::zeros(sizes, t.options()), t}, 2);
}

std::uint64_t next_cache_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> LayerCache::append(const at::Tensor& key,
                                                     const at::Tensor& value) {
  FERRY_ASSERT(key.dim() == 4 && value.sizes() == key.sizes(), "cache append of {} and {}",
               shape_string(key.sizes()), shape_string(value.sizes()));
  if (!key_.defined()) {
    key_ = key;
    value_ = value;
  } else {
    FERRY_ASSERT(
        key_.size(0) == key.size(0) && key_.size(1) == key.size(1) && key_.size(3) == key.size(3),
        "cache of shape {} cannot take {}", shape_string(key_.sizes()), shape_string(key.sizes()));
    key_ = at::cat({follow(key_, key), key}, 2);
    value_ = at::cat({follow(value_, value), value}, 2);
  }
  return {key_, value_};
}

void LayerCache::assign(at::Tensor key, at::Tensor value) {
  FERRY_ASSERT(key.dim() == 4 && value.sizes() == key.sizes(), "cache assign of {} and {}",
               shape_string(key.sizes()), shape_string(value.sizes()));
  key_ = std::move(key);
  value_ = std::move(value);
}

Bytes LayerCache::size_bytes() const {
  if (!key_.defined()) return Bytes(0);
  return Bytes(static_cast<std::uint64_t>(key_.nbytes() + value_.nbytes()));
}

KvCache::KvCache(std::size_t n_layers) : layers_(n_layers), id_(next_cache_id()) {}

KvCache::~KvCache() {
  if (listener_) listener_->on_destroyed(id_);
}

KvCache::KvCache(KvCache&& other) noexcept
    : layers_(std::move(other.layers_)),
      id_(std::exchange(other.id_, 0)),
      listener_(std::move(other.listener_)) {}

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  if (this != &other) {
    if (listener_) listener_->on_destroyed(id_);
    layers_ = std::move(other.layers_);
    id_ = std::exchange(other.id_, 0);
    listener_ = std::move(other.listener_);
  }
  return *this;
}

std::int64_t KvCache::length() const {
  for (const LayerCache& l : layers_) {
    if (!l.empty()) return l.length();
  }
  return 0;
}

void KvCache::keep(const at::Tensor& rows, std::int64_t first, std::int64_t width) {
  for (LayerCache& layer : layers_) {
    if (layer.empty()) continue;
    const at::Tensor index = rows.to(layer.key().device());
    layer.assign(layer.key().index_select(0, index).narrow(2, first, width).contiguous(),
                 layer.value().index_select(0, index).narrow(2, first, width).contiguous());
  }
  if (listener_) listener_->on_keep(*this, rows, first, width);
}

void KvCache::append_rows(const KvCache& other, std::int64_t pad_self, std::int64_t pad_other) {
  FERRY_ASSERT(other.n_layers() == n_layers(), "cache rows of {} layers join a cache of {}",
               other.n_layers(), n_layers());
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    LayerCache& mine = layers_[l];
    const LayerCache& theirs = other.layers_[l];
    FERRY_ASSERT(mine.empty() == theirs.empty(), "layer {}: cache rows join a cache that {}", l,
                 mine.empty() ? "holds none of that layer" : "holds that layer and they do not");
    if (mine.empty()) continue;
    const at::Tensor k = theirs.key().to(mine.key().device());
    const at::Tensor v = theirs.value().to(mine.value().device());
    mine.assign(at::cat({pad_positions(mine.key(), pad_self), pad_positions(k, pad_other)}, 0),
                at::cat({pad_positions(mine.value(), pad_self), pad_positions(v, pad_other)}, 0));
  }
  if (listener_) listener_->on_append_rows(*this, other, pad_self, pad_other);
}

Bytes KvCache::size_bytes() const {
  std::uint64_t total = 0;
  for (const auto& l : layers_) total += l.size_bytes().value();
  return Bytes(total);
}

}  // namespace ferry::models
