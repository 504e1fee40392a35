#include "ferry/models/kv_cache.h"

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

Bytes KvCache::size_bytes() const {
  std::uint64_t total = 0;
  for (const auto& l : layers_) total += l.size_bytes().value();
  return Bytes(total);
}

}  // namespace ferry::models
