#pragma once
// How the kernels split work over threads (Note [Kernel threads]).

#include <cstdint>
#include <functional>

namespace ferry::kernels {

// Runs f(begin, end) over [0, n) in contiguous chunks of at least `grain` items, on up to
// at::get_num_threads() threads (the count `--threads` / at::set_num_threads sets). Exceptions
// thrown by f reach the caller (the first one). Runs serially inside another parallel region.
void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& f);

// How many distinct threads parallel_for(n, 1, ...) ran chunks on: a check that the kernels are
// really threaded (a build without OpenMP runs them on one thread, silently half as fast).
int threads_used(std::int64_t n);

}  // namespace ferry::kernels
