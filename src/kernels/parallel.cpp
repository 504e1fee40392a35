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
namespace {

// Note [Chunks taken in turn]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Halving the rows between two threads assumes two equal cores. On a shared VM they are not: one
// vCPU is often slower for a while (steal time, a neighbour's memory traffic), and with a static
// split the other waited at every product's barrier (perf: 14 % of a bf16 decode's samples in
// libgomp's barrier wait). Each thread now starts on its own chunk, then takes the next
// unclaimed one, so a slow thread takes fewer. Four chunks per thread keep each contiguous run of
// rows long enough for the hardware prefetcher; the first chunk being the thread's own makes
// every thread of the team do some of the work (threads_used counts them).
constexpr std::int64_t kChunksPerThread = 4;

}  // namespace

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
    // Note [Chunks taken in turn]: a few chunks per thread, each thread's first one its own,
    // the rest taken from a shared counter as threads finish.
    const std::int64_t chunk =
        std::max(grain, (n + threads * kChunksPerThread - 1) / (threads * kChunksPerThread));
    const std::int64_t chunks = (n + chunk - 1) / chunk;
    std::atomic<std::int64_t> next{threads};
#pragma omp parallel num_threads(static_cast <int>(threads))
    {
      for (std::int64_t c = omp_get_thread_num(); c < chunks;
           c = next.fetch_add(1, std::memory_order_relaxed)) {
        const std::int64_t begin = c * chunk;
        try {
          f(begin, std::min(n, begin + chunk));
        } catch (...) {
          if (!failed.test_and_set()) error = std::current_exception();
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
