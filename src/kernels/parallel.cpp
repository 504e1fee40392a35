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
#pragma omp parallel num_threads(static_cast <int>(threads))
    {
      const std::int64_t team = omp_get_num_threads();
      const std::int64_t chunk = (n + team - 1) / team;
      const std::int64_t begin = omp_get_thread_num() * chunk;
      if (begin < n) {
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
