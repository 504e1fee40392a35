#include "gemv.h"

#include <algorithm>
#include <vector>

#include "ferry/kernels/parallel.h"
#include "int8_group.h"

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
    case Isa::kAvx512Vnni: return &gemv_rows_avx512_vnni;
    case Isa::kAvx512: return &gemv_rows_avx512;
    case Isa::kAvx2: return &gemv_rows_avx2;
    case Isa::kPortable: return &gemv_rows_portable;
  }
  return &gemv_rows_portable;
}

// x's rows quantized per group of 32 into xq (zeros beyond k) and scales (Note [int8
// activations]): a few K values per call, once for all threads and the same on every ISA. With
// `with_sums` (the VNNI variant only), also each group's sum of quantized values (Note [int8 with
// VNNI]).
void quantize_rows(GemvArgs& args, std::vector<std::int8_t>& xq, std::vector<float>& scales,
                   std::vector<std::int32_t>& sums, bool with_sums, Isa isa) {
  const std::int64_t groups = (args.k + kInt8Group - 1) / kInt8Group;
  args.xq_stride = groups * kInt8Group;
  xq.assign(args.m_rows * args.xq_stride, 0);
  scales.resize(args.m_rows * groups);
  if (with_sums) sums.resize(args.m_rows * groups);
  for (std::int64_t m = 0; m < args.m_rows; ++m) {
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t k0 = g * kInt8Group;
      std::int8_t* q = xq.data() + m * args.xq_stride + k0;
      const float* x = args.x + m * args.x_stride + k0;
      const std::int64_t len = std::min(kInt8Group, args.k - k0);
      scales[m * groups + g] = quantize_int8_group(x, len, q, isa);
      if (!with_sums) continue;
      std::int32_t sum = 0;
      for (std::int64_t i = 0; i < kInt8Group; ++i) sum += q[i];
      sums[m * groups + g] = sum;
    }
  }
  args.xq = xq.data();
  args.x_scales = scales.data();
  args.xq_sums = with_sums ? sums.data() : nullptr;
}

}  // namespace

void gemv(const GemvArgs& input_args, std::int64_t n, Isa isa) {
  GemvArgs args = input_args;
  // The calling thread's, kept from call to call: a decode step makes ~170 products.
  thread_local std::vector<std::int8_t> xq;
  thread_local std::vector<float> x_scales;
  thread_local std::vector<std::int32_t> xq_sums;
  if (args.format == WeightFormat::kI8) {
    quantize_rows(args, xq, x_scales, xq_sums, /*with_sums=*/isa == Isa::kAvx512Vnni, isa);
  }
  const GemvRowsFn rows_fn = variant(isa);
  const std::int64_t n_blocks = (n + kBlockRows - 1) / kBlockRows;
  const std::int64_t block_bytes = kBlockRows * args.k * bytes_per_element(args.format);
  const std::int64_t grain =
      std::max<std::int64_t>(1, kMinBytesPerTask / std::max<std::int64_t>(block_bytes, 1));
  kernels::parallel_for(n_blocks, grain, [&](std::int64_t begin, std::int64_t end) {
    rows_fn(args, begin * kBlockRows, std::min(end * kBlockRows, n));
  });
}

}  // namespace ferry::kernels::detail
