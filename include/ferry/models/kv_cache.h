#pragma once
// The key/value cache of generation: per decoder layer, the keys and values of every position
// seen so far, kept on the device where that layer executes.

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "ferry/core/bytes.h"

namespace ferry::models {

// One layer's cache: key and value of shape [batch, kv_heads, length, head_dim], held in buffers
// with room for more positions (Note [Cache buffers] in kv_cache.cpp).
class LayerCache {
 public:
  // Appends this step's key and value (same layout, `length` = the step's tokens) and returns the
  // whole history (views of the buffers, valid while the cache lives: later appends write only
  // past them). The stored tensors follow the new ones' device: a layer that executes elsewhere
  // than last step (a different device map) moves its history once.
  std::pair<at::Tensor, at::Tensor> append(const at::Tensor& key, const at::Tensor& value);
  // Replaces the history (no room beyond it: the next append makes its own buffers).
  void assign(at::Tensor key, at::Tensor value);
  // The most positions the cache will be asked to hold (the context the plan reserved for), or
  // 0 when unknown: the first buffers of the cache's own take all of it (pages are committed as
  // positions are written), and never more while the history fits; without it they grow by
  // kCacheStep positions.
  void set_max_positions(std::int64_t positions) noexcept { max_positions_ = positions; }
  // Positions cached so far (0 when empty).
  std::int64_t length() const { return key_.defined() ? key_.size(2) : 0; }
  // Positions the buffers hold room for (≥ length()).
  std::int64_t capacity() const { return key_buffer_.defined() ? key_buffer_.size(2) : 0; }
  bool empty() const { return !key_.defined(); }
  const at::Tensor& key() const noexcept { return key_; }
  const at::Tensor& value() const noexcept { return value_; }
  // Bytes held: the buffers, room included.
  Bytes size_bytes() const;

  // Positions an uncapped buffer grows by.
  static constexpr std::int64_t kCacheStep = 128;

 private:
  void grow(const at::Tensor& like, std::int64_t needed);

  at::Tensor key_buffer_;  // [batch, kv_heads, capacity, head_dim]
  at::Tensor value_buffer_;
  at::Tensor key_;  // key_buffer_'s first length() positions
  at::Tensor value_;
  std::int64_t committed_ = 0;  // positions whose pages were committed ahead (CPU)
  bool owned_ = false;          // the buffers are this cache's own (appends may write past length)
  std::int64_t max_positions_ = 0;
};

class KvCache;

// Told of every change to a cache's rows other than a step's appends, and of its end: how a
// pipeline repeats them on the ranks that hold the cache's other layers (Note [Pipeline caches]
// in src/engine/pipeline.cpp). Called on the thread that changes the cache; must not throw from
// on_destroyed.
class CacheListener {
 public:
  virtual ~CacheListener() = default;
  virtual void on_keep(const KvCache& cache, const at::Tensor& rows, std::int64_t first,
                       std::int64_t width) = 0;
  virtual void on_append_rows(const KvCache& cache, const KvCache& other, std::int64_t pad_self,
                              std::int64_t pad_other) = 0;
  virtual void on_destroyed(std::uint64_t cache_id) noexcept = 0;
};

// The cache of a whole model: one LayerCache per decoder layer (a pipeline stage fills only its
// own layers; the others stay empty). Not thread-safe. Movable, not copyable: each cache has an
// id unique in the process.
class KvCache {
 public:
  explicit KvCache(std::size_t n_layers);
  ~KvCache();
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&& other) noexcept;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  LayerCache& layer(std::size_t i) { return layers_.at(i); }
  const LayerCache& layer(std::size_t i) const { return layers_.at(i); }
  std::size_t n_layers() const noexcept { return layers_.size(); }
  // Positions cached so far (those of the first layer that holds any).
  std::int64_t length() const;
  Bytes size_bytes() const;
  // Every layer's LayerCache::set_max_positions.
  void set_max_positions(std::int64_t positions) noexcept;

  // Keeps rows `rows` (a CPU int64 index, in that order) and positions [first, first + width)
  // of every layer that holds any (a batch that loses rows and the padding columns they leave).
  void keep(const at::Tensor& rows, std::int64_t first, std::int64_t width);
  // Appends the rows of `other` below this cache's rows, in every layer that holds any, after
  // padding this cache's history with `pad_self` and other's with `pad_other` zero positions on
  // the left (left padding: masked out by the attention mask the caller keeps). Both caches hold
  // the same layers. `other` is left unchanged.
  void append_rows(const KvCache& other, std::int64_t pad_self, std::int64_t pad_other);

  std::uint64_t id() const noexcept { return id_; }
  const std::shared_ptr<CacheListener>& listener() const noexcept { return listener_; }
  void set_listener(std::shared_ptr<CacheListener> listener) { listener_ = std::move(listener); }

 private:
  std::vector<LayerCache> layers_;
  std::uint64_t id_ = 0;
  std::shared_ptr<CacheListener> listener_;
};

}  // namespace ferry::models
