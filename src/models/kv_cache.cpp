#include "ferry/models/kv_cache.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/shape.h"

namespace ferry::models {
namespace {

// `t` with `n` zero positions before its own along dim 2.
at::Tensor pad_positions(const at::Tensor& t, std::int64_t n) {
  if (n == 0) return t;
  std::vector<std::int64_t> sizes = t.sizes().vec();
  sizes[2] = n;
  return at::cat({at::zeros(sizes, t.options()), t}, 2);
}

// buffer[:, :, at : at + T, :] = src (T = src.size(2)). A decode step writes one position per
// (batch, head) row: on the CPU that is a few hundred bytes each, and LibTorch's narrow + copy_
// (a dispatch and a TensorIterator per tensor, per layer, per step) cost more than the bytes, so
// rows of the same dtype with a contiguous last dim are copied directly.
void write_positions(const at::Tensor& buffer, std::int64_t at, const at::Tensor& src) {
  if (!(buffer.is_cpu() && src.is_cpu() && buffer.scalar_type() == src.scalar_type() &&
        buffer.is_contiguous() && src.stride(3) == 1)) {
    buffer.narrow(2, at, src.size(2)).copy_(src);
    return;
  }
  const std::int64_t batch = src.size(0), heads = src.size(1), tokens = src.size(2);
  const std::size_t row_bytes = static_cast<std::size_t>(src.size(3) * src.element_size());
  const auto* from = static_cast<const std::byte*>(src.data_ptr());
  auto* to = static_cast<std::byte*>(buffer.data_ptr());
  const std::int64_t element = src.element_size();
  const std::int64_t s0 = src.stride(0), s1 = src.stride(1), s2 = src.stride(2);
  const std::int64_t d0 = buffer.stride(0), d1 = buffer.stride(1), d2 = buffer.stride(2);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t t = 0; t < tokens; ++t) {
        const std::int64_t src_offset = b * s0 + h * s1 + t * s2;
        const std::int64_t dst_offset = b * d0 + h * d1 + (at + t) * d2;
        std::memcpy(to + dst_offset * element, from + src_offset * element, row_bytes);
      }
    }
  }
}

// Note [Cache pages committed ahead]
// A step writes one position per (batch, head) row, and on the CPU the room's pages are
// committed by those writes (Note [Cache buffers]): a page fault every 16 positions of each row
// (4 KiB of 64 floats), ~50 per step of the reference model, and a fault costs microseconds on
// a virtual machine. perf put ~5 % of the main thread of a 250-token int8 decode in them. So
// the rows' pages for the next kCommitAhead positions are committed in one madvise
// (MADV_POPULATE_WRITE, Linux 5.14) per row and span: a few calls per step instead of ~50
// faults, and at most kCommitAhead positions resident before their time. A kernel without it
// says EINVAL, and the pages fault in as before.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
constexpr std::int64_t kCommitAhead = 128;

// Commits the pages of positions [from, to) of every (batch, head) row of a contiguous CPU
// buffer [B, H, capacity, D], as far as whole pages go (a partial page faults in later).
void commit_positions(const at::Tensor& buffer, std::int64_t from, std::int64_t to) {
  static const std::uintptr_t page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  static std::atomic<bool> unsupported{false};
  if (from >= to || unsupported.load(std::memory_order_relaxed)) return;
  const std::int64_t element = buffer.element_size();
  const auto base = reinterpret_cast<std::uintptr_t>(buffer.data_ptr());
  for (std::int64_t b = 0; b < buffer.size(0); ++b) {
    for (std::int64_t h = 0; h < buffer.size(1); ++h) {
      const std::int64_t row = b * buffer.stride(0) + h * buffer.stride(1);
      const std::uintptr_t begin =
          (base + static_cast<std::uintptr_t>((row + from * buffer.stride(2)) * element)) &
          ~(page - 1);
      const std::uintptr_t end =
          (base + static_cast<std::uintptr_t>((row + to * buffer.stride(2)) * element)) &
          ~(page - 1);
      if (begin >= end) continue;
      if (::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE) != 0 &&
          errno == EINVAL) {
        unsupported.store(true, std::memory_order_relaxed);
        return;
      }
    }
  }
}

std::uint64_t next_cache_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

// Note [Cache buffers]
// ~~~~~~~~~~~~~~~~~~~~
// A decode step appends one position to every layer's history. Concatenating the history with
// the new position copied the whole cache each step, into fresh memory: O(T²) bytes over T
// tokens, and at 400 tokens of the reference model an int8 decode step took 58 ms instead of
// 20, most of it in the copy and the page faults of the new tensors. So a layer keeps buffers
// with room for more positions and a step writes its keys and values into that room.
// - Growth: with a cap (set_max_positions: the most positions the run will hold, the context
//   the plan reserved KV memory for), the first buffers of the cache's own take the whole cap at
//   once, on the CPU, so the history is copied once, after the prefill, and never again. The
//   room costs address space, not memory: at::empty leaves the pages untouched, and a page is
//   committed when a step first writes a position in it, so what is resident still follows the
//   history. (Growing geometrically instead copied the history log₂(cap) times into fresh
//   pages: at 120 tokens of an int8 decode, ~4 % of the main thread, half of it page faults.)
//   On a GPU, whose allocator commits what it reserves, the room grows geometrically: to twice
//   the history (at least what the step needs), never past the cap. Without a cap,
//   by kCacheStep positions (a bounded slack, O(T² / kCacheStep) copies). A history that
//   outgrows its cap grows to what it needs.
// - The first append keeps the step's tensors as they are (prefill: nothing to copy), and so
//   does assign(); neither is written into, since they may be views of other tensors. The next
//   append moves the history into buffers of the cache's own.
// - The history handed out is a view of the first length() positions: not contiguous along the
//   batch and head dims, which the attention (strided) reads as it is. Earlier views stay valid:
//   appends write only past them.
// - size_bytes() counts the room too: what the cache has reserved (its pages are committed as
//   they are written).
void LayerCache::grow(const at::Tensor& like, std::int64_t needed) {
  const std::int64_t length = this->length();
  std::int64_t capacity = 0;
  if (max_positions_ >= needed && like.is_cpu()) {
    capacity = max_positions_;
  } else if (max_positions_ >= needed) {
    // A device's allocator commits what it reserves: the room grows as the history does.
    capacity = std::min(max_positions_, std::max(needed, 2 * length));
  } else {
    capacity = (needed + kCacheStep - 1) / kCacheStep * kCacheStep;
  }
  std::vector<std::int64_t> sizes = like.sizes().vec();
  sizes[2] = capacity;
  at::Tensor keys = at::empty(sizes, like.options());
  at::Tensor values = at::empty(sizes, like.options());
  if (length > 0) {
    keys.narrow(2, 0, length).copy_(key_);
    values.narrow(2, 0, length).copy_(value_);
  }
  committed_ = length;  // the copy wrote those
  key_buffer_ = std::move(keys);
  value_buffer_ = std::move(values);
  key_ = key_buffer_.narrow(2, 0, length);
  value_ = value_buffer_.narrow(2, 0, length);
  owned_ = true;
}

std::pair<at::Tensor, at::Tensor> LayerCache::append(const at::Tensor& key,
                                                     const at::Tensor& value) {
  FERRY_ASSERT(key.dim() == 4 && value.sizes() == key.sizes(), "cache append of {} and {}",
               shape_string(key.sizes()), shape_string(value.sizes()));
  if (!key_.defined()) {
    assign(key, value);
    return {key_, value_};
  }
  FERRY_ASSERT(
      key_.size(0) == key.size(0) && key_.size(1) == key.size(1) && key_.size(3) == key.size(3),
      "cache of shape {} cannot take {}", shape_string(key_.sizes()), shape_string(key.sizes()));
  const std::int64_t length = this->length();
  const std::int64_t needed = length + key.size(2);
  // The history follows the step's device (and dtype): new buffers there.
  const bool same_place = placement_of(key) == placement_of(key_buffer_) &&
                          key.scalar_type() == key_buffer_.scalar_type();
  if (!owned_ || needed > capacity() || !same_place) grow(key, needed);
  if (key_buffer_.is_cpu() && needed > committed_) {
    // Note [Cache pages committed ahead]
    const std::int64_t until = std::min(capacity(), needed + kCommitAhead);
    commit_positions(key_buffer_, committed_, until);
    commit_positions(value_buffer_, committed_, until);
    committed_ = until;
  }
  write_positions(key_buffer_, length, key);
  write_positions(value_buffer_, length, value);
  key_ = key_buffer_.narrow(2, 0, needed);
  value_ = value_buffer_.narrow(2, 0, needed);
  return {key_, value_};
}

void LayerCache::assign(at::Tensor key, at::Tensor value) {
  FERRY_ASSERT(key.dim() == 4 && value.sizes() == key.sizes(), "cache assign of {} and {}",
               shape_string(key.sizes()), shape_string(value.sizes()));
  key_ = std::move(key);
  value_ = std::move(value);
  key_buffer_ = key_;
  value_buffer_ = value_;
  owned_ = false;
}

Bytes LayerCache::size_bytes() const {
  if (!key_buffer_.defined()) return Bytes(0);
  return Bytes(static_cast<std::uint64_t>(key_buffer_.nbytes() + value_buffer_.nbytes()));
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

void KvCache::set_max_positions(std::int64_t positions) noexcept {
  for (LayerCache& l : layers_) l.set_max_positions(positions);
}

Bytes KvCache::size_bytes() const {
  std::uint64_t total = 0;
  for (const auto& l : layers_) total += l.size_bytes().value();
  return Bytes(total);
}

}  // namespace ferry::models
