#include <ATen/Parallel.h>

#include <algorithm>

#include "gemv.h"

namespace ferry::kernels::detail {
namespace {

// A thread's share should be worth waking it: below this many weight bytes per task the pool's
// hand-off costs more than the rows take to read.
constexpr std::int64_t kMinBytesPerTask = std::int64_t{256} << 10;

std::int64_t bytes_per_element(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32: return 4;
    case WeightFormat::kBF16:
    case WeightFormat::kF16: return 2;
    case WeightFormat::kI8: return 1;
  }
  return 4;
}

GemvRowsFn variant(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return &gemv_rows_avx512;
    case Isa::kAvx2: return &gemv_rows_avx2;
    case Isa::kPortable: return &gemv_rows_portable;
  }
  return &gemv_rows_portable;
}

}  // namespace

void gemv(const GemvArgs& args, std::int64_t n, Isa isa) {
  const GemvRowsFn rows_fn = variant(isa);
  const std::int64_t n_blocks = (n + kBlockRows - 1) / kBlockRows;
  const std::int64_t block_bytes = kBlockRows * args.k * bytes_per_element(args.format);
  const std::int64_t grain = std::max<std::int64_t>(1, kMinBytesPerTask / std::max<std::int64_t>(block_bytes, 1));
  at::parallel_for(0, n_blocks, grain, [&](std::int64_t begin, std::int64_t end) {
    rows_fn(args, begin * kBlockRows, std::min(end * kBlockRows, n));
  });
}

}  // namespace ferry::kernels::detail
