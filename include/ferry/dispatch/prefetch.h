#pragma once
// The prefetcher: brings offloaded blocks to their execution device ahead of need.
//
// A *block* is the set of tensors one offload hook materializes for one call (a Linear's weight
// and bias, or a whole decoder layer with preload classes). During the first forward the
// prefetcher records the order in which blocks run; afterwards, while block i computes, a worker
// thread loads blocks i+1, i+2, ... (cyclically: after the last block of a forward come the
// first ones of the next) for as long as their staging cost fits the budget. A block that runs
// out of the recorded order is simply loaded when it is asked for; the forward's real order
// replaces the recorded one at its end.
//
// Weights that rest in a file (disk offload: the checkpoint's shards or the offload folder) are
// read with positioned reads — from the page cache where it holds them, O_DIRECT where the file
// system allows for the rest (io::ReadMode::Auto) — into reusable aligned buffers of a pool; a
// block executing on the CPU computes straight from those buffers or, by default (in_place), from
// the page cache's own pages for a tensor it holds (at least 90 % of its pages); a block whose
// every tensor is so held is taken when it runs, not queued for a worker (Note [Blocks used in
// place] in prefetch.cpp). Weights already in memory are copied to the execution device (a
// simulated GPU, or CUDA) by the worker.
//
// Every byte the prefetcher holds for blocks that run now or are prefetched is reserved before it
// is allocated — read buffers and converted copies against the host budget, copies on a GPU
// against the device budget — so staging memory never exceeds either (Note [Staging budget] in
// prefetch.cpp). A read error or short
// read surfaces as a typed error from the forward that needed the block.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/dtype.h"
#include "ferry/core/execution_device.h"
#include "ferry/dispatch/align_devices.h"
#include "ferry/io/direct_reader.h"

namespace ferry::dispatch {

struct PrefetchOptions {
  bool lookahead = true;  // false: each block is loaded when it runs (still through the pool)
  // Staging memory for blocks running and prefetched, per side (Note [Staging budget]):
  //   host    read buffers and CPU copies — host RAM, counted in the CPU budget;
  //   device  copies on a GPU execution device, counted in that GPU's budget.
  // nullopt: twice the largest unit's cost (a unit is a device-map entry, or a block when there
  // is no map). Each must hold the largest block.
  std::optional<std::uint64_t> host_budget_bytes;
  std::optional<std::uint64_t> device_budget_bytes;
  // Auto: bytes the page cache holds are copied from it, the rest read with O_DIRECT.
  io::ReadMode read_mode = io::ReadMode::Auto;
  // With Auto: a tensor of a CPU block whose pages the page cache holds (at least 90 %) is used
  // in place, not copied (Note [Weights used in place] in src/io/direct_reader.cpp); its pages
  // count as borrowed page cache, not as ferry's memory (Note [Page cache used in place] in
  // src/core/memory.cpp). false (`--io copy`): such bytes are copied into staging.
  bool in_place = true;
  // Tensors smaller than this are read through the page cache even with O_DIRECT: an aligned
  // read would pad them to whole pages for no gain.
  std::uint64_t direct_min_bytes = 1 << 20;
  std::size_t chunk_bytes = 16 << 20;  // largest single read
  // Loader threads (with lookahead). Two: while the kernels keep every core busy, one loader
  // waiting to be scheduled after each read leaves the disk idle; a second keeps a read in flight
  // (issue 15: 16 rows streaming from a cold disk hid their compute with two, not with one).
  int threads = 2;
  // Classes of modules that run only for some inputs (a mixture's routed experts): their blocks
  // are loaded when they run, never prefetched from the order of an earlier forward.
  std::vector<std::string> on_demand_classes;
};

struct PrefetchStats {
  std::uint64_t host_budget_bytes = 0;  // the resolved budgets (0 until known)
  std::uint64_t device_budget_bytes = 0;
  std::uint64_t host_reserved_bytes = 0;  // reserved now (running + prefetched blocks)
  std::uint64_t device_reserved_bytes = 0;
  std::uint64_t peak_host_reserved_bytes = 0;
  std::uint64_t peak_device_reserved_bytes = 0;
  std::uint64_t pool_bytes = 0;       // host buffers allocated now (live + cached for reuse)
  std::uint64_t peak_pool_bytes = 0;  // never above host_budget_bytes
  std::uint64_t bytes_read = 0;       // from files (tensor bytes)
  // File bytes (page padding included) of the reads of large tensors by where they came from:
  // copied from the page cache without I/O (--io copy; auto: pages of tensors it holds in part)
  std::uint64_t page_cache_bytes = 0;
  std::uint64_t direct_bytes = 0;  // read from storage with O_DIRECT (--io auto, copy, direct)
  // Tensor bytes not read at all: CPU blocks computed from the page cache's own pages, which held
  // (nearly) all of them (--io auto; Note [Weights used in place] in src/io/direct_reader.cpp).
  std::uint64_t in_place_bytes = 0;
  std::uint64_t bytes_to_device = 0;  // copied to a non-CPU execution device
  std::uint64_t hits = 0;       // block ready when it ran (or taken in place: nothing to load)
  std::uint64_t waits = 0;      // block still loading when it ran (waited for it)
  std::uint64_t late = 0;       // block queued but not started when it ran (loaded then)
  std::uint64_t misses = 0;     // block not prefetched: loaded when it ran
  std::uint64_t evictions = 0;  // prefetched blocks dropped unused (wrong guess, budget)
  std::uint64_t prefetch_errors = 0;  // failed prefetches (retried when the block ran)
  std::uint64_t forwards = 0;         // completed forwards seen
  std::size_t blocks = 0;
};

// One tensor of a block: its name in `source` and the dtype it must have (the model's).
struct BlockTensor {
  std::string name;
  WeightsMap source;
  DType dtype;
};

class Prefetcher {
 public:
  using BlockId = std::size_t;

  explicit Prefetcher(PrefetchOptions options = {});
  ~Prefetcher();  // stops the workers; blocks still held stay valid (their memory is refcounted)
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  const PrefetchOptions& options() const noexcept { return options_; }

  // Registers a block executing on `device`. `path` names it in messages; `unit` groups blocks
  // for the default budget (the device-map entry they belong to); an `on_demand` block is loaded
  // only by take(), never prefetched. Throws MissingTensor for a tensor its source lacks.
  BlockId add_block(std::string path, std::string unit, ExecutionDevice device,
                    std::vector<BlockTensor> tensors, bool on_demand = false);

  // The block's tensors on its device, in registration order. Waits for a prefetch in flight;
  // loads on this thread when the block was not prefetched or its prefetch failed. Throws the
  // load's error (CorruptFile, IoError, ...) and OutOfBudget when the block cannot fit beside the
  // blocks running now. The block counts as running until release().
  std::vector<at::Tensor> take(BlockId block);
  // The block stopped running: its reservation is returned and prefetching moves on.
  void release(BlockId block);

  // Forward boundaries (the model's root hook calls them). Without them a forward is taken to
  // restart when the first recorded block runs again.
  void begin_forward();
  void end_forward();

  // Blocks until nothing is queued or loading (tests, benchmarks, and before dropping caches).
  void wait_idle();

  PrefetchStats stats() const;
  // Staging bytes of a block (what take() reserves for it): host and device side.
  std::pair<std::uint64_t, std::uint64_t> block_cost(BlockId block) const;
  // The recorded execution order (block paths), for tests and logs.
  std::vector<std::string> recorded_order() const;

 private:
  struct State;
  PrefetchOptions options_;
  std::shared_ptr<State> state_;
};

// The root module's hook that marks forward boundaries for a prefetcher.
class PrefetchBoundaryHook final : public ModelHook {
 public:
  explicit PrefetchBoundaryHook(std::shared_ptr<Prefetcher> prefetcher)
      : prefetcher_(std::move(prefetcher)) {}
  const std::shared_ptr<Prefetcher>& prefetcher() const noexcept { return prefetcher_; }
  void pre_forward(nn::Module& module, nn::TensorView& args) override;
  void post_forward(nn::Module& module, nn::TensorView& outputs) override;

 private:
  std::shared_ptr<Prefetcher> prefetcher_;
};

// Puts `prefetcher`'s boundary hook first on the root of `model` (beside its other hooks,
// without running their init again).
void add_prefetch_boundary(nn::Module& model, std::shared_ptr<Prefetcher> prefetcher);

// The prefetcher a dispatched model streams through; null when it has none.
std::shared_ptr<Prefetcher> model_prefetcher(const nn::Module& model);

}  // namespace ferry::dispatch
