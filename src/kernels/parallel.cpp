#include "ferry/kernels/parallel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ferry::kernels {

// Note [Chunks taken in turn]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Halving the rows between two threads assumes two equal cores. On a shared VM they are not: one
// vCPU is often slower for a while (steal time, a neighbour's memory traffic), and with a static
// split the other waited at every product's barrier (perf: 14 % of a bf16 decode's samples in
// libgomp's barrier wait). So each thread starts on its own equal share of the first half of the
// range (every thread of the team does some of the work; threads_used counts them), then takes
// the rest from a shared counter in chunks that shrink as the range runs out: a remaining / (2 ·
// threads) each, never less than the grain. The last chunks, the ones a thread may be left
// waiting for, are then a grain long, while the early ones stay long for the hardware
// prefetcher. With four equal chunks per thread instead, the calling thread of a bfloat16 decode
// spent 6.5-7.1 % of its samples waiting in libgomp (perf, two runs each); taken this way, with
// the products' grain at 64 KiB of weights (it was 256), 2.6-2.8 %.

// Note [Kernel threads]
// ~~~~~~~~~~~~~~~~~~~~~
// The kernels thread over output rows with OpenMP, the pool LibTorch's own CPU kernels use, so
// the two never oversubscribe the cores. at::parallel_for is a header template that is parallel
// only in code compiled with -fopenmp (without it, it silently runs on the calling thread: ferry
// once decoded on one thread whatever --threads said), and it sizes its team from the OpenMP
// runtime ferry's objects link, which is not the one LibTorch's at::set_num_threads configures
// when a LibTorch 2.x wheel brings its own libgomp. So the team size is asked of ATen
// (at::get_num_threads) and passed explicitly; threads_used lets a test check the split happens.
void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& f) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t tasks = (n + grain - 1) / grain;
  const std::int64_t threads = std::min<std::int64_t>(at::get_num_threads(), tasks);
#ifdef _OPENMP
  if (threads > 1 && !omp_in_parallel() && !at::in_parallel_region()) {
    std::exception_ptr error;
    std::atomic_flag failed = ATOMIC_FLAG_INIT;
    const auto run = [&](std::int64_t begin, std::int64_t end) {
      try {
        f(begin, end);
      } catch (...) {
        if (!failed.test_and_set()) error = std::current_exception();
      }
    };
    // Note [Chunks taken in turn]: each thread's own share of the first half, then shrinking
    // chunks from a shared counter.
    const std::int64_t share = std::max(grain, (n + 2 * threads - 1) / (2 * threads));
    std::atomic<std::int64_t> next{std::min(n, threads * share)};
#pragma omp parallel num_threads(static_cast <int>(threads))
    {
      // The team may be smaller than asked for: its threads then take the missing ones' shares.
      const std::int64_t team = omp_get_num_threads();
      for (std::int64_t t = omp_get_thread_num(); t < threads; t += team) {
        if (t * share < n) run(t * share, std::min(n, (t + 1) * share));
      }
      std::int64_t begin = next.load(std::memory_order_relaxed);
      while (begin < n) {
        const std::int64_t size = std::max(grain, (n - begin) / (2 * threads));
        if (next.compare_exchange_weak(begin, begin + size, std::memory_order_relaxed)) {
          run(begin, std::min(n, begin + size));
          begin = next.load(std::memory_order_relaxed);
        }
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  f(0, n);
}

int threads_used(std::int64_t n) {
  std::mutex mutex;
  std::set<std::thread::id> ids;
  parallel_for(n, 1, [&](std::int64_t, std::int64_t) {
    std::lock_guard<std::mutex> lock(mutex);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int>(ids.size());
}

}  // namespace ferry::kernels
