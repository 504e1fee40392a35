#include "gemv.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/kernels/linear.h"
#include "ferry/kernels/parallel.h"
#include "int8_group.h"

namespace ferry::kernels {
namespace {

// Note [Where a step's time goes]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A decode step is its weight products plus everything else: norms, rotary, attention, the
// cache, sampling, LibTorch's dispatch and the hand-offs of the thread team. perf shows the
// shares but not the two sums, and the sums are what the issue-14 targets turn on: a format's
// products should read its bytes as fast as float32's do, and the rest is a fixed cost that
// weighs more as the weights shrink. So each grouped product (one fork and join of the team)
// adds its wall time, x's quantization included, and the bytes of weight it read to the calling
// thread's counters: two clock reads per product, ~100 a step. `ferry run` reports the decode's
// share (decode_products; the rest is decode_seconds less it, waiting for streamed weights
// included), and bench/formats.sh prints both per format. Thread-local: a step runs its products on the thread that calls it, so concurrent
// generations (ferry serve's engine, tests) do not mix; the team's other threads work inside the
// products and are counted in their wall time.
thread_local ProductStats t_stats;

}  // namespace

ProductStats product_stats() { return t_stats; }

ProductStats operator-(const ProductStats& a, const ProductStats& b) {
  return {.calls = a.calls - b.calls,
          .weight_bytes = a.weight_bytes - b.weight_bytes,
          .seconds = a.seconds - b.seconds};
}

}  // namespace ferry::kernels

namespace ferry::kernels::detail {
namespace {

// A thread's share should be worth waking it: below this many weight bytes per task the pool's
// hand-off costs more than the rows take to read. Also the smallest chunk a thread takes (Note
// [Chunks taken in turn]): ~6 µs of reading at 10 GB/s, what a thread may be left waiting for.
constexpr std::int64_t kMinBytesPerTask = std::int64_t{64} << 10;

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

// The vector width of `isa`'s variant when it reads bfloat16 in pairs (Note [bfloat16 in pairs]
// in gemv_block.h), 0 when it does not.
std::int64_t pair_width(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni:
    case Isa::kAvx512: return 16;
    case Isa::kAvx2: return 8;
    case Isa::kPortable: return 0;
  }
  return 0;
}

// x's rows [0, m_rows) × [0, k rounded down to 32) in pair order for `width` into `pairs`
// (64-byte aligned); sets args' x_pairs and pair_width. Nothing for rows past the direct
// product's (m_rows > kDecodeMaxRows) or k < 32.
void pair_rows(GemvArgs& args, std::int64_t width, std::vector<float>& pairs) {
  const std::int64_t k_end = args.k / 32 * 32;
  if (width == 0 || k_end == 0 || args.m_rows > kDecodeMaxRows) return;
  constexpr std::int64_t kAlign = 64 / sizeof(float);
  pairs.resize(static_cast<std::size_t>(args.m_rows * k_end + kAlign));
  float* out = pairs.data();
  out += (kAlign - reinterpret_cast<std::uintptr_t>(out) / sizeof(float) % kAlign) % kAlign;
  for (std::int64_t m = 0; m < args.m_rows; ++m) {
    const float* x = args.x + m * args.x_stride;
    float* o = out + m * k_end;
    for (std::int64_t b = 0; b < k_end; b += 2 * width) {
      for (std::int64_t i = 0; i < width; ++i) {
        o[b + i] = x[b + 2 * i];
        o[b + width + i] = x[b + 2 * i + 1];
      }
    }
  }
  args.x_pairs = out;
  args.pair_width = width;
}

}  // namespace

void gemv(const GemvArgs& args, std::int64_t n, Isa isa) {
  GemvArgs one = args;
  gemv_group(std::span<GemvArgs>(&one, 1), std::span<const std::int64_t>(&n, 1), isa);
}

// Note [Grouped products]
// ~~~~~~~~~~~~~~~~~~~~~~~
// At decode sizes a product is short (q_proj of the 1.5 GB reference model in int8: 1 MiB, ~25 µs
// of reading) and each one pays a fork and a join of the thread team, and for int8 quantizes x.
// Products that read the same x (q, k and v; gate and up) are one parallel loop over the blocks
// of all their weights: one fork, one join, x quantized once. A chunk of blocks may span two
// weights; each part is computed with its own weight's arguments, so every y equals its own
// gemv() bit for bit (the same rows, the same order of sums).
void gemv_group(std::span<GemvArgs> group, std::span<const std::int64_t> n, Isa isa) {
  FERRY_ASSERT(!group.empty() && group.size() == n.size(), "gemv_group: {} products, {} sizes",
               group.size(), n.size());
  const auto start = std::chrono::steady_clock::now();  // Note [Where a step's time goes]
  GemvArgs& first = group.front();
  // The calling thread's, kept from call to call: a decode step makes ~170 products.
  thread_local std::vector<std::int8_t> xq;
  thread_local std::vector<float> x_scales;
  thread_local std::vector<std::int32_t> xq_sums;
  thread_local std::vector<float> x_pairs;
  if (first.format == WeightFormat::kI8) {
    quantize_rows(first, xq, x_scales, xq_sums, /*with_sums=*/isa == Isa::kAvx512Vnni, isa);
  }
  if (first.format == WeightFormat::kBF16) pair_rows(first, pair_width(isa), x_pairs);
  // Block offsets of each product in the shared loop.
  std::vector<std::int64_t> offset(group.size() + 1, 0);
  std::int64_t bytes = 0;  // of weight (and int8 scales) read
  for (std::size_t i = 0; i < group.size(); ++i) {
    GemvArgs& a = group[i];
    FERRY_ASSERT(
        a.format == first.format && a.k == first.k && a.x == first.x && a.m_rows == first.m_rows,
        "gemv_group: product {} does not share the first one's x and format", i);
    a.xq = first.xq;
    a.xq_stride = first.xq_stride;
    a.x_scales = first.x_scales;
    a.xq_sums = first.xq_sums;
    a.x_pairs = first.x_pairs;
    a.pair_width = first.pair_width;
    offset[i + 1] = offset[i] + (n[i] + kBlockRows - 1) / kBlockRows;
    bytes += n[i] * a.k * bytes_per_element(a.format);
    if (a.format == WeightFormat::kI8) {
      bytes += n[i] * a.n_groups * static_cast<std::int64_t>(a.half_scales ? 2 : 4);
    }
  }
  const GemvRowsFn rows_fn = variant(isa);
  const std::int64_t block_bytes = kBlockRows * first.k * bytes_per_element(first.format);
  const std::int64_t grain =
      std::max<std::int64_t>(1, kMinBytesPerTask / std::max<std::int64_t>(block_bytes, 1));
  kernels::parallel_for(offset.back(), grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::size_t i = 0; i < group.size(); ++i) {
      const std::int64_t lo = std::max(begin, offset[i]);
      const std::int64_t hi = std::min(end, offset[i + 1]);
      if (lo >= hi) continue;
      rows_fn(group[i], (lo - offset[i]) * kBlockRows,
              std::min((hi - offset[i]) * kBlockRows, n[i]));
    }
  });
  ++t_stats.calls;
  t_stats.weight_bytes += bytes;
  t_stats.seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace ferry::kernels::detail
