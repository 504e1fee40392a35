#include "ferry/dispatch/prefetch.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "staging_pool.h"

namespace ferry::dispatch {

// Note [Staging budget]
// Each block has a cost on two sides: host bytes — read buffers for tensors read from files
// (page-aligned for O_DIRECT), a converted copy when the stored dtype differs from the model's
// (or the bytes are misaligned for their type), CPU copies made by LibTorch — and device bytes,
// the copies on a GPU execution device. A block's cost is reserved before anything is allocated
// for it (when it is queued, or when it runs unannounced) and returned when it stops running or
// is evicted. On each side the sum of reservations never exceeds that side's budget: prefetching
// stops where the next block does not fit, prefetched blocks needed later than the one being
// scheduled are evicted to make room, and a block that cannot fit beside the blocks running now
// is an OutOfBudget error. The host buffers themselves come from a StagingPool whose live +
// cached bytes are kept under the host budget.

namespace {

enum class BlockState { Idle, Queued, Loading, Ready, Running };

constexpr std::size_t kAlign = io::DirectReader::kAlignment;
std::size_t align_up(std::size_t n, std::size_t to = kAlign) { return (n + to - 1) / to * to; }

struct TensorPlan {
  BlockTensor spec;
  TensorInfo info;                       // stored dtype and shape
  std::optional<io::FileExtent> extent;  // read with a reader when set
  bool direct = false;                   // with the O_DIRECT reader (else the buffered one)
  std::size_t raw_offset = 0;            // in the block's arena
  std::size_t raw_capacity = 0;
  std::size_t converted_offset = 0;  // in the arena; used when converting on the CPU
  bool convert = false;              // dtype differs or bytes may be misaligned
};

struct Block {
  std::string path;
  std::string unit;
  ExecutionDevice device;
  bool on_demand = false;  // loaded by take() only (PrefetchOptions::on_demand_classes)
  std::vector<TensorPlan> tensors;
  std::size_t arena_bytes = 0;
  std::uint64_t host_cost = 0;  // arena + CPU copies LibTorch allocates
  std::uint64_t device_cost = 0;

  BlockState state = BlockState::Idle;
  bool reserved = false;
  // Its last load found every tensor in the page cache and used it in place: it is not queued
  // for the loaders but taken in place when it runs (Note [Blocks used in place]).
  bool in_place = false;
  std::vector<at::Tensor> loaded;  // Ready
  std::exception_ptr error;        // Ready after a failed prefetch
};

std::uint64_t target_bytes(const TensorInfo& info, DType dtype) {
  return info.numel() * static_cast<std::uint64_t>(element_size(dtype));
}

}  // namespace

struct Prefetcher::State {
  explicit State(const PrefetchOptions& o)
      : options(o), direct(o.read_mode), buffered(io::ReadMode::Buffered) {
    direct.set_chunk_bytes(o.chunk_bytes);
    buffered.set_chunk_bytes(o.chunk_bytes);
  }

  PrefetchOptions options;
  io::DirectReader direct;    // large tensors (options.read_mode)
  io::DirectReader buffered;  // small ones
  std::shared_ptr<StagingPool> pool = StagingPool::create();

  mutable std::mutex mu;
  std::condition_variable changed;  // a block left Loading
  std::condition_variable work;     // queue or stop
  std::deque<Block> blocks;         // a deque: references stay valid while blocks are added
  std::deque<BlockId> queue;
  std::vector<std::thread> workers;
  bool stop = false;

  std::uint64_t host_reserved = 0;
  std::uint64_t device_reserved = 0;
  std::uint64_t largest_host_unit = 0;
  std::uint64_t largest_device_unit = 0;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> unit_cost;

  std::vector<BlockId> order;
  std::vector<std::vector<std::size_t>> positions;  // per block, its indices in `order`
  std::vector<BlockId> recording;
  std::optional<std::size_t> cursor;  // index in `order` of the block that ran last
  bool boundaries = false;

  PrefetchStats counters;

  std::uint64_t host_budget() const {
    return options.host_budget_bytes.value_or(2 * largest_host_unit);
  }
  std::uint64_t device_budget() const {
    return options.device_budget_bytes.value_or(2 * largest_device_unit);
  }
  bool fits(const Block& b) const {
    return host_reserved + b.host_cost <= host_budget() &&
           device_reserved + b.device_cost <= device_budget();
  }

  // --- reservations (mu held) ---------------------------------------------------------------
  void reserve(Block& b) {
    host_reserved += b.host_cost;
    device_reserved += b.device_cost;
    b.reserved = true;
    counters.peak_host_reserved_bytes = std::max(counters.peak_host_reserved_bytes, host_reserved);
    counters.peak_device_reserved_bytes =
        std::max(counters.peak_device_reserved_bytes, device_reserved);
  }
  void unreserve(Block& b) {
    if (!b.reserved) return;
    host_reserved -= b.host_cost;
    device_reserved -= b.device_cost;
    b.reserved = false;
  }
  void make_idle(Block& b) {
    b.loaded.clear();
    b.error = nullptr;
    unreserve(b);
    b.state = BlockState::Idle;
  }

  // How many blocks after the cursor `id` next runs (order.size() when unknown).
  std::size_t distance(BlockId id) const {
    const std::size_t n = order.size();
    if (n == 0 || id >= positions.size() || positions[id].empty()) return n;
    const std::size_t from = cursor.value_or(n - 1);
    std::size_t best = n;
    for (std::size_t p : positions[id]) best = std::min(best, (p + n - from) % n);
    return best == 0 ? n : best;
  }

  // Evicts prefetched (Ready or Queued) blocks that run later than `limit` blocks from now,
  // farthest first, until block `keep` fits. Returns whether it fits.
  bool evict_for(std::size_t limit, BlockId keep) {
    if (fits(blocks[keep])) return true;
    std::vector<std::pair<std::size_t, BlockId>> victims;
    for (BlockId id = 0; id < blocks.size(); ++id) {
      const Block& b = blocks[id];
      if (id == keep || (b.state != BlockState::Ready && b.state != BlockState::Queued)) continue;
      const std::size_t d = distance(id);
      if (d > limit) victims.emplace_back(d, id);
    }
    std::sort(victims.rbegin(), victims.rend());
    for (const auto& [d, id] : victims) {
      if (fits(blocks[keep])) break;
      Block& b = blocks[id];
      if (b.state == BlockState::Queued) std::erase(queue, id);
      make_idle(b);
      ++counters.evictions;
    }
    return fits(blocks[keep]);
  }

  // Queues the blocks that follow the cursor while they fit the budget.
  void schedule() {
    if (!options.lookahead || workers.empty() || order.empty() || !cursor) return;
    const std::size_t n = order.size();
    // Up to a whole cycle: the block that just ran comes last, for the next forward.
    for (std::size_t d = 1; d <= n; ++d) {
      const BlockId id = order[(*cursor + d) % n];
      Block& b = blocks[id];
      if (b.state != BlockState::Idle || b.on_demand || b.in_place) continue;
      if (!evict_for(d, id)) break;
      reserve(b);
      b.state = BlockState::Queued;
      queue.push_back(id);
      work.notify_one();
    }
  }

  // Records that `id` runs and moves the cursor to it.
  void note_run(BlockId id) {
    if (!boundaries && !recording.empty() && id == recording.front()) finish_forward();
    recording.push_back(id);
    const std::size_t n = order.size();
    if (n == 0 || id >= positions.size() || positions[id].empty()) {
      cursor.reset();
      return;
    }
    if (cursor && order[(*cursor + 1) % n] == id) {
      cursor = (*cursor + 1) % n;
      return;
    }
    const auto& pos = positions[id];
    auto next = cursor ? std::upper_bound(pos.begin(), pos.end(), *cursor) : pos.begin();
    cursor = next == pos.end() ? pos.front() : *next;
  }

  void finish_forward() {
    if (recording.empty()) return;
    ++counters.forwards;
    if (recording != order) {
      order = std::move(recording);
      positions.assign(blocks.size(), {});
      for (std::size_t i = 0; i < order.size(); ++i) positions[order[i]].push_back(i);
      cursor = order.size() - 1;  // the next forward starts at order[0]
    }
    recording.clear();
  }

  // Reserves a block that must run now, evicting prefetched blocks and waiting for loads in
  // flight as needed.
  void reserve_now(std::unique_lock<std::mutex>& lock, BlockId id) {
    Block& b = blocks[id];
    for (;;) {
      if (evict_for(0, id)) break;
      const bool loading = std::any_of(blocks.begin(), blocks.end(), [](const Block& x) {
        return x.state == BlockState::Loading;
      });
      if (!loading) {
        std::vector<std::string> running;
        for (const Block& x : blocks) {
          if (x.state == BlockState::Running) running.push_back(x.path);
        }
        const bool host = host_reserved + b.host_cost > host_budget();
        const std::uint64_t need = host ? b.host_cost : b.device_cost;
        const std::uint64_t cap = host ? host_budget() : device_budget();
        const std::uint64_t held = host ? host_reserved : device_reserved;
        throw OutOfBudget(
            fmt::format("block '{}' needs {} bytes of {} staging memory but the prefetch budget "
                        "is {} bytes and {} bytes are held by the blocks running now [{}]; raise "
                        "the prefetch budget",
                        b.path, need, host ? "host" : b.device.to_string(), cap, held,
                        running.empty() ? "none" : fmt::format("{}", fmt::join(running, ", "))),
            ErrorFields{.path = b.path,
                        .expected = fmt::format("{} bytes", need),
                        .actual = fmt::format("{} bytes free", cap - held)});
      }
      changed.wait(lock);
    }
    reserve(b);
  }

  // --- loading (no lock held) -----------------------------------------------------------------
  at::Tensor wrap(const std::shared_ptr<StagingPool::Arena>& arena, std::byte* data,
                  const std::vector<std::int64_t>& shape, DType dtype) const {
    return at::from_blob(
        data, shape, [arena](void*) {}, at::TensorOptions().dtype(require_scalar_type(dtype)));
  }

  // Note [Weights used in place] (direct_reader.cpp): a tensor of a CPU block is computed from
  // the page cache's own pages when the cache holds (nearly) every page of it. Undefined when it
  // may not be, or the cache does not hold it.
  at::Tensor in_place_tensor(const Block& b, const TensorPlan& t, io::ReadCounts* from) const {
    if (!options.in_place || !b.device.is_cpu() || !t.extent || t.extent->length == 0 ||
        t.convert) {
      return {};
    }
    // Small tensors too (they are read buffered, not with O_DIRECT, when they are read): the
    // direct reader's mapping holds them as well.
    std::shared_ptr<std::byte> bytes = direct.resident(*t.extent, from);
    if (!bytes) return {};
    std::byte* data = bytes.get();
    return at::from_blob(
        data, t.info.shape, [bytes = std::move(bytes)](void*) {},
        at::TensorOptions().dtype(require_scalar_type(t.info.dtype)));
  }

  // Note [Blocks used in place]
  // A block whose every tensor was used in place needs no staging and no read: handing it to a
  // loader thread costs only the wake-ups of that thread and of the compute thread waiting for
  // it, which on a 2-core machine preempt the kernels' threads (perf: 11 % of a page-cache-warm
  // decode in the kernel's IRQ and wake-up paths). So once a load of a block used every tensor
  // in place, the block is no longer queued: take() checks the cache and wraps its pages on the
  // compute thread, reserving nothing. If the cache no longer holds a tensor (reclaimed under
  // pressure), the block is loaded as any other, and queued again from then on.
  std::optional<std::vector<at::Tensor>> take_in_place(const Block& b) {
    io::ReadCounts from;
    std::vector<at::Tensor> out;
    out.reserve(b.tensors.size());
    for (const TensorPlan& t : b.tensors) {
      if (t.extent && t.extent->length == 0) {
        out.push_back(
            at::empty(t.info.shape, at::TensorOptions().dtype(require_scalar_type(t.spec.dtype))));
        continue;
      }
      at::Tensor value;
      try {
        value = in_place_tensor(b, t, &from);
      } catch (const Error&) {
        return std::nullopt;  // the load that follows reports it
      }
      if (!value.defined()) return std::nullopt;
      out.push_back(std::move(value));
    }
    std::lock_guard lock(mu);
    counters.in_place_bytes += from.in_place_bytes;
    return out;
  }

  // Loads block `b`; `all_in_place` tells whether every tensor was used in place.
  std::vector<at::Tensor> load(const Block& b, bool* all_in_place = nullptr) {
    // The block's buffers, acquired when a tensor is first read into them: a block whose every
    // tensor is used in place needs none.
    std::shared_ptr<StagingPool::Arena> arena;
    const auto staging = [&]() -> StagingPool::Arena& {
      if (!arena) arena = pool->acquire(b.arena_bytes, host_budget());
      return *arena;
    };
    std::vector<at::Tensor> out;
    out.reserve(b.tensors.size());
    std::uint64_t read = 0;
    io::ReadCounts from;
    std::uint64_t to_device = 0;
    bool in_place = true;
    for (const TensorPlan& t : b.tensors) {
      at::Tensor value = in_place_tensor(b, t, &from);
      if (value.defined()) {
        // computed from the page cache's pages
      } else if (t.extent && t.extent->length > 0) {
        in_place = false;
        StagingPool::Arena& buffers = staging();
        const io::DirectReader& reader = t.direct ? direct : buffered;
        std::byte* bytes =
            reader.read(*t.extent, buffers.data() + t.raw_offset, t.raw_capacity, &from);
        read += t.extent->length;
        value = wrap(arena, bytes, t.info.shape, t.info.dtype);
        const bool aligned =
            reinterpret_cast<std::uintptr_t>(bytes) %
                static_cast<std::uintptr_t>(std::max(1, element_size(t.info.dtype))) ==
            0;
        if (t.spec.dtype != t.info.dtype || !aligned) {
          if (b.device.is_cpu()) {
            at::Tensor converted =
                wrap(arena, buffers.data() + t.converted_offset, t.info.shape, t.spec.dtype);
            converted.copy_(value);
            value = converted;
          } else {
            value = move_to(value, b.device).to(require_scalar_type(t.spec.dtype));
          }
        }
      } else if (t.extent) {
        value =
            at::empty(t.info.shape, at::TensorOptions().dtype(require_scalar_type(t.spec.dtype)));
      } else {
        in_place = false;
        value = t.spec.source->load(t.spec.name, {.dtype = t.spec.dtype});
      }
      if (!b.device.is_cpu() && placement_of(value) != b.device) {
        value = move_to(value, b.device);
        to_device += value.nbytes();
      }
      out.push_back(std::move(value));
    }
    std::lock_guard lock(mu);
    counters.bytes_read += read;
    counters.page_cache_bytes += from.page_cache_bytes;
    counters.in_place_bytes += from.in_place_bytes;
    counters.direct_bytes += from.direct_bytes;
    counters.bytes_to_device += to_device;
    if (all_in_place != nullptr) *all_in_place = in_place && b.device.is_cpu();
    return out;
  }

  void worker_loop() {
    std::unique_lock lock(mu);
    for (;;) {
      work.wait(lock, [&] { return stop || !queue.empty(); });
      if (stop) return;
      const BlockId id = queue.front();
      queue.pop_front();
      Block& b = blocks[id];
      b.state = BlockState::Loading;
      lock.unlock();
      std::vector<at::Tensor> loaded;
      std::exception_ptr error;
      bool in_place = false;
      try {
        loaded = load(b, &in_place);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      b.in_place = in_place;
      b.loaded = std::move(loaded);
      b.error = error;
      if (error) ++counters.prefetch_errors;
      b.state = BlockState::Ready;
      changed.notify_all();
    }
  }
};

Prefetcher::Prefetcher(PrefetchOptions options)
    : options_(options), state_(std::make_shared<State>(options)) {
  FERRY_CHECK(options.threads >= 1, InvalidArgument,
              "the prefetcher needs at least one loader thread, got {}", options.threads);
  if (options.lookahead) {
    for (int i = 0; i < options.threads; ++i) {
      state_->workers.emplace_back([s = state_.get()] { s->worker_loop(); });
    }
  }
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->work.notify_all();
  for (std::thread& t : state_->workers) t.join();
}

Prefetcher::BlockId Prefetcher::add_block(std::string path, std::string unit,
                                          ExecutionDevice device, std::vector<BlockTensor> tensors,
                                          bool on_demand) {
  Block b{
      .path = std::move(path), .unit = std::move(unit), .device = device, .on_demand = on_demand};
  if (b.unit.empty()) b.unit = b.path;
  for (BlockTensor& spec : tensors) {
    TensorPlan t{.spec = std::move(spec), .info = {}};
    t.info = t.spec.source->info(t.spec.name);
    t.extent = t.spec.source->extent(t.spec.name);
    const std::uint64_t target = target_bytes(t.info, t.spec.dtype);
    if (t.extent) {
      t.direct = io::reads_whole_pages(options_.read_mode) &&
                 t.extent->length >= options_.direct_min_bytes;
      const io::DirectReader& reader = t.direct ? state_->direct : state_->buffered;
      // Direct reads land page-aligned; buffered ones at cache-line alignment.
      b.arena_bytes = align_up(b.arena_bytes, t.direct ? kAlign : 64);
      t.raw_offset = b.arena_bytes;
      t.raw_capacity = reader.staging_bytes(*t.extent);
      b.arena_bytes += t.raw_capacity;
      const int esize = std::max(1, element_size(t.info.dtype));
      t.convert = t.spec.dtype != t.info.dtype || t.extent->offset % esize != 0;
      if (t.convert && device.is_cpu()) {
        b.arena_bytes = align_up(b.arena_bytes, 64);
        t.converted_offset = b.arena_bytes;
        b.arena_bytes += target;
      }
      if (!device.is_cpu()) b.device_cost += target + (t.convert ? t.info.size_bytes() : 0);
    } else if (!device.is_cpu()) {
      b.device_cost += target;
    } else if (t.spec.dtype != t.info.dtype) {
      b.host_cost += target;  // LibTorch's converted copy
    }
    b.tensors.push_back(std::move(t));
  }
  b.arena_bytes = align_up(b.arena_bytes);  // the pool hands out whole pages
  b.host_cost += b.arena_bytes;
  std::lock_guard lock(state_->mu);
  auto& [unit_host, unit_device] = state_->unit_cost[b.unit];
  unit_host += b.host_cost;
  unit_device += b.device_cost;
  state_->largest_host_unit = std::max(state_->largest_host_unit, unit_host);
  state_->largest_device_unit = std::max(state_->largest_device_unit, unit_device);
  state_->blocks.push_back(std::move(b));
  state_->positions.resize(state_->blocks.size());
  ++state_->counters.blocks;
  return state_->blocks.size() - 1;
}

std::vector<at::Tensor> Prefetcher::take(BlockId id) {
  State& s = *state_;
  std::unique_lock lock(s.mu);
  FERRY_ASSERT(id < s.blocks.size(), "unknown prefetch block {}", id);
  Block& b = s.blocks[id];
  FERRY_ASSERT(b.state != BlockState::Running, "block '{}' runs twice at once", b.path);
  s.note_run(id);
  const bool was_loading = b.state == BlockState::Loading;
  if (was_loading) s.changed.wait(lock, [&] { return b.state != BlockState::Loading; });
  if (b.state == BlockState::Ready && !b.error) {
    ++(was_loading ? s.counters.waits : s.counters.hits);
    std::vector<at::Tensor> out = std::move(b.loaded);
    b.loaded.clear();
    b.state = BlockState::Running;
    s.schedule();
    return out;
  }
  // Not prefetched, still queued, or its prefetch failed (retried here: a transient failure such
  // as a full device passes, a broken file fails again and its error reaches the caller).
  if (b.state == BlockState::Queued) {
    std::erase(s.queue, id);
    ++s.counters.late;
  }
  if (b.state == BlockState::Idle && b.in_place) {
    // Note [Blocks used in place]: Idle, unreserved; marked Running while its pages are checked.
    b.state = BlockState::Running;
    s.schedule();
    lock.unlock();
    std::optional<std::vector<at::Tensor>> out = s.take_in_place(b);
    lock.lock();
    if (out) {
      ++s.counters.hits;
      return std::move(*out);
    }
    b.in_place = false;
    b.state = BlockState::Idle;
  }
  if (b.state == BlockState::Idle) ++s.counters.misses;
  b.loaded.clear();
  b.error = nullptr;
  if (!b.reserved) s.reserve_now(lock, id);
  b.state = BlockState::Running;
  s.schedule();
  lock.unlock();
  try {
    bool in_place = false;
    std::vector<at::Tensor> out = s.load(b, &in_place);
    lock.lock();
    b.in_place = in_place;
    return out;
  } catch (...) {
    if (!lock.owns_lock()) lock.lock();
    s.make_idle(b);
    s.changed.notify_all();
    throw;
  }
}

void Prefetcher::release(BlockId id) {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  FERRY_ASSERT(id < s.blocks.size(), "unknown prefetch block {}", id);
  Block& b = s.blocks[id];
  if (b.state != BlockState::Running) return;
  s.make_idle(b);
  s.changed.notify_all();
  s.schedule();
}

void Prefetcher::begin_forward() {
  std::lock_guard lock(state_->mu);
  state_->boundaries = true;
  state_->recording.clear();
}

void Prefetcher::end_forward() {
  std::lock_guard lock(state_->mu);
  state_->boundaries = true;
  state_->finish_forward();
  state_->schedule();
}

void Prefetcher::wait_idle() {
  State& s = *state_;
  std::unique_lock lock(s.mu);
  s.changed.wait(lock, [&] {
    return s.queue.empty() && std::none_of(s.blocks.begin(), s.blocks.end(), [](const Block& b) {
             return b.state == BlockState::Loading;
           });
  });
}

PrefetchStats Prefetcher::stats() const {
  std::lock_guard lock(state_->mu);
  PrefetchStats out = state_->counters;
  out.host_budget_bytes = state_->host_budget();
  out.device_budget_bytes = state_->device_budget();
  out.host_reserved_bytes = state_->host_reserved;
  out.device_reserved_bytes = state_->device_reserved;
  out.pool_bytes = state_->pool->live_bytes() + state_->pool->cached_bytes();
  out.peak_pool_bytes = state_->pool->peak_bytes();
  return out;
}

std::pair<std::uint64_t, std::uint64_t> Prefetcher::block_cost(BlockId id) const {
  std::lock_guard lock(state_->mu);
  FERRY_ASSERT(id < state_->blocks.size(), "unknown prefetch block {}", id);
  return {state_->blocks[id].host_cost, state_->blocks[id].device_cost};
}

std::vector<std::string> Prefetcher::recorded_order() const {
  std::lock_guard lock(state_->mu);
  std::vector<std::string> out;
  for (BlockId id : state_->order) out.push_back(state_->blocks[id].path);
  return out;
}

void PrefetchBoundaryHook::pre_forward(nn::Module& /*module*/, nn::TensorView& /*args*/) {
  prefetcher_->begin_forward();
}
void PrefetchBoundaryHook::post_forward(nn::Module& /*module*/, nn::TensorView& /*outputs*/) {
  prefetcher_->end_forward();
}

void add_prefetch_boundary(nn::Module& model, std::shared_ptr<Prefetcher> prefetcher) {
  std::vector<std::shared_ptr<ModelHook>> hooks{
      std::make_shared<PrefetchBoundaryHook>(std::move(prefetcher))};
  if (std::shared_ptr<ModelHook> root = model.hook()) hooks.push_back(std::move(root));
  model.set_hook(std::make_shared<SequentialHook>(std::move(hooks)));
}

std::shared_ptr<Prefetcher> model_prefetcher(const nn::Module& model) {
  const auto hooks = find_hooks<PrefetchBoundaryHook>(model);
  return hooks.empty() ? nullptr : hooks.front()->prefetcher();
}

}  // namespace ferry::dispatch
