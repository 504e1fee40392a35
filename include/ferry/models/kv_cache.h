#pragma once
// The key/value cache of generation: per decoder layer, the keys and values of every position
// seen so far, kept on the device where that layer executes.

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "ferry/core/bytes.h"

namespace ferry::models {

// One layer's cache: key and value of shape [batch, kv_heads, length, head_dim].
class LayerCache {
 public:
  // Appends this step's key and value (same layout, `length` = the step's tokens) and returns the
  // whole history. The stored tensors follow the new ones' device: a layer that executes
  // elsewhere than last step (a different device map) moves its history once.
  std::pair<at::Tensor, at::Tensor> append(const at::Tensor& key, const at::Tensor& value);
  // Replaces the history.
  void assign(at::Tensor key, at::Tensor value);
  // Positions cached so far (0 when empty).
  std::int64_t length() const { return key_.defined() ? key_.size(2) : 0; }
  bool empty() const { return !key_.defined(); }
  const at::Tensor& key() const noexcept { return key_; }
  const at::Tensor& value() const noexcept { return value_; }
  Bytes size_bytes() const;

 private:
  at::Tensor key_;
  at::Tensor value_;
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
