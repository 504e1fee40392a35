#pragma once
// The key/value cache of generation: per decoder layer, the keys and values of every position
// seen so far, kept on the device where that layer executes.

#include <ATen/ATen.h>

#include <cstdint>
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
  // Replaces the history (a batch that gains, loses or re-pads rows: engine::Engine).
  void assign(at::Tensor key, at::Tensor value);
  // Positions cached so far (0 when empty).
  std::int64_t length() const { return key_.defined() ? key_.size(2) : 0; }
  const at::Tensor& key() const noexcept { return key_; }
  const at::Tensor& value() const noexcept { return value_; }
  Bytes size_bytes() const;

 private:
  at::Tensor key_;
  at::Tensor value_;
};

// The cache of a whole model: one LayerCache per decoder layer. Not thread-safe.
class KvCache {
 public:
  explicit KvCache(std::size_t n_layers) : layers_(n_layers) {}
  LayerCache& layer(std::size_t i) { return layers_.at(i); }
  std::size_t n_layers() const noexcept { return layers_.size(); }
  // Positions cached so far (those of layer 0).
  std::int64_t length() const { return layers_.empty() ? 0 : layers_[0].length(); }
  Bytes size_bytes() const;

 private:
  std::vector<LayerCache> layers_;
};

}  // namespace ferry::models
