#pragma once
// Private to the kernels layer: the block loop of the decode product, written once over a vector
// type V and instantiated by each gemv_<isa>.cpp with its own V (an anonymous-namespace type, so
// each instantiation is its own function, compiled for that file's instruction set).
//
// V provides: kWidth (floats per vector, 8 or 16), Vec, zero(), load(const float*),
// store(float*, Vec), from_bf16(const uint16_t*), from_f16(const uint16_t*),
// fma(a, b, c) = a·b + c, add(a, b), mul(a, b), broadcast(float), sum(Vec) (horizontal), the
// scalar tail half_to_float(uint16_t), and for int8 (kWidth 8 only; a V without it hands int8 to
// another variant) dot_i8(const int8_t* w, const int8_t* x): lane i = Σ_{j<4} w[4i + j] ·
// x[4i + j], exact (Note [int8 activations] in int8_group.cpp), and optionally IVec, dot_i32 and
// sum8 (Note [int8 groups in eights]).
//
// The small fixed-trip loops carry `#pragma GCC unroll`: at -O2 GCC keeps them as loops over
// arrays on the stack (a store and a reload per FMA), which made the bfloat16 and float16 products
// compute-bound at 0.4 of read-only bandwidth; unrolled, the accumulators live in registers.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gemv.h"
#include "int8_group.h"

namespace ferry::kernels::detail {

// static: each gemv_<isa>.cpp compiles its own copy for its instruction set (no ODR merging).
static inline float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

// Writes float weight row n's elements [k0, k0 + len) as float32 to dst, then zeros up to
// padded_len.
template <class V>
void convert_row(const GemvArgs& a, std::int64_t n, std::int64_t k0, std::int64_t len,
                 std::int64_t padded_len, float* dst) {
  constexpr std::int64_t W = V::kWidth;
  const std::int64_t vec_len = len - len % W;
  const std::int64_t row = n * a.w_stride + k0;
  std::int64_t k = 0;
  switch (a.format) {
    case WeightFormat::kF32: {
      const float* src = static_cast<const float*>(a.w) + row;
      for (; k < vec_len; k += W) V::store(dst + k, V::load(src + k));
      for (; k < len; ++k) dst[k] = src[k];
      break;
    }
    case WeightFormat::kBF16: {
      const auto* src = static_cast<const std::uint16_t*>(a.w) + row;
      for (; k < vec_len; k += W) V::store(dst + k, V::from_bf16(src + k));
      for (; k < len; ++k) dst[k] = bf16_to_float(src[k]);
      break;
    }
    case WeightFormat::kF16: {
      const auto* src = static_cast<const std::uint16_t*>(a.w) + row;
      for (; k < vec_len; k += W) V::store(dst + k, V::from_f16(src + k));
      for (; k < len; ++k) dst[k] = V::half_to_float(src[k]);
      break;
    }
    case WeightFormat::kI8: break;  // never: int8 takes gemv_rows_i8
  }
  for (; k < padded_len; ++k) dst[k] = 0.0f;
}

// acc[r] += rows[r][0, len) · x[0, len) for each of the block's rows; len is a multiple of W.
template <class V>
inline void dot_block(const float* const* rows, const float* x, std::int64_t len,
                      typename V::Vec* acc) {
  typename V::Vec a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  static_assert(kBlockRows == 4, "dot_block is unrolled for four rows");
  for (std::int64_t k = 0; k < len; k += V::kWidth) {
    const typename V::Vec xv = V::load(x + k);
    a0 = V::fma(V::load(rows[0] + k), xv, a0);
    a1 = V::fma(V::load(rows[1] + k), xv, a1);
    a2 = V::fma(V::load(rows[2] + k), xv, a2);
    a3 = V::fma(V::load(rows[3] + k), xv, a3);
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

// Up to this many rows of x, the weight is converted in registers as it is read and used at once
// (no store to and reload from a float32 buffer): decode at batch 1 and 2 is bound by how fast the
// stored bytes stream in, and the buffer's extra store and load per vector show at those rates.
// Rows are taken in pairs (more accumulators would not fit in 16 registers); each further pair
// re-reads the block's 4 weight rows from L2 (32 KiB of bfloat16 at K = 4096) and converts them
// again. Measured (bench_kernels --rows, 4096², 2 threads, AVX2) against the buffer: M = 4 about
// 2 × faster for bfloat16 and float16, M = 16 equal to 1.4 × faster; so every decode size.
constexpr std::int64_t kDirectMaxRows = kDecodeMaxRows;

// W elements of a float weight at `offset`, as floats.
template <class V, WeightFormat F>
inline typename V::Vec load_weight(const void* base, std::int64_t offset) {
  if constexpr (F == WeightFormat::kF32) {
    return V::load(static_cast<const float*>(base) + offset);
  } else if constexpr (F == WeightFormat::kBF16) {
    return V::from_bf16(static_cast<const std::uint16_t*>(base) + offset);
  } else {
    static_assert(F == WeightFormat::kF16, "int8 takes gemv_rows_i8");
    return V::from_f16(static_cast<const std::uint16_t*>(base) + offset);
  }
}

// Note [bfloat16 in pairs]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// Widening 16-bit lanes to 32 (vpmovzxwd) is a shuffle, and shuffles have one port on most x86
// cores: at one per 8 or 16 weights it bounded the bfloat16 product below the float32 one.
// A bfloat16 is the top half of a float32, so a vector of 2W bfloat16 read as W 32-bit lanes
// holds two float vectors without any shuffle: lane i shifted left by 16 is element 2i, and lane
// i with its low half cleared is element 2i + 1. The x these meet must be in the same order:
// each block of 2W elements of x is stored as its W even elements, then its W odd ones
// (GemvArgs::x_pairs). gemv_group() makes that copy once for all its products and threads: made
// per call of gemv_rows (once per chunk of rows), it was 2 % of a bfloat16 decode's samples.
// The products are the same; only the float32 summation order changes.

// Whether V reads bfloat16 in pairs (V::bf16_pair(p, even, odd) over 2W elements at p).
template <class V>
concept HasBf16Pair = requires(const std::uint16_t* p, typename V::Vec& v) {
  V::bf16_pair(p, v, v);
};

// Note [The next block, fetched ahead]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A block reads its four rows side by side, four streams a row apart, and every product of a
// decode step starts each thread's streams afresh: the hardware prefetcher alone left the float
// products well below the read-only bound at decode sizes. So while a block is computed, the
// next block's rows are prefetched at the same offsets (none past the thread's rows), as the
// int8 variants do. Measured on the reference model (2 threads, 64 tokens, 4 alternated runs;
// bench/formats.sh's command): ms per token fp32 38.6-45.8 → 34.0-41.1, bfloat16 22.7-23.5 →
// 19.0-20.4, float16 21.3-22.7 → 16.3-17.2. Two blocks ahead measured the same as one. Since
// Note [Rows read in runs], the AVX-512 variants read only what is left of each row after its
// whole runs this way.

// acc[m][r] += x[m, k_begin, k_end) · w[n0 + rows[r], k_begin, k_end) for M rows of x, reading
// each weight vector once; k_begin and k_end are multiples of 32 (so of 2W). kPairs: bfloat16 read
// in pairs, x in GemvArgs::x_pairs' order (Note [bfloat16 in pairs]). prefetch_next: fetch the next
// block's rows ahead (Note [The next block, fetched ahead]).
template <class V, WeightFormat F, int M, bool kPairs = false>
void direct_block(const GemvArgs& a, const float* x, std::int64_t x_stride, std::int64_t n0,
                  const std::int64_t* rows, std::int64_t k_begin, std::int64_t k_end,
                  typename V::Vec (*acc)[kBlockRows], bool prefetch_next) {
  constexpr std::int64_t W = V::kWidth;
  typename V::Vec sum[M][kBlockRows];
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m) {
#pragma GCC unroll 16
    for (std::int64_t r = 0; r < kBlockRows; ++r) sum[m][r] = acc[m][r];
  }
  std::int64_t offset[kBlockRows];
#pragma GCC unroll 16
  for (std::int64_t r = 0; r < kBlockRows; ++r) offset[r] = (n0 + rows[r]) * a.w_stride;
  // Note [The next block, fetched ahead]: its rows' bytes at the same k, 32 elements (one or
  // two cache lines) per row and step.
  constexpr std::int64_t kElementBytes = F == WeightFormat::kF32 ? 4 : 2;
  const char* next_base = static_cast<const char*>(a.w) + kBlockRows * a.w_stride * kElementBytes;
  for (std::int64_t k = k_begin; k < k_end; k += 32) {
    if (prefetch_next) {
#pragma GCC unroll 4
      for (std::int64_t r = 0; r < kBlockRows; ++r) {
        const char* p = next_base + (offset[r] + k) * kElementBytes;
        __builtin_prefetch(p, 0, 3);
        if constexpr (kElementBytes == 4) __builtin_prefetch(p + 64, 0, 3);
      }
    }
    // Partial sums per 32 elements, then added: twice the independent FMA chains.
    typename V::Vec group[M][kBlockRows];
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) {
#pragma GCC unroll 16
      for (std::int64_t r = 0; r < kBlockRows; ++r) group[m][r] = V::zero();
    }
    if constexpr (kPairs) {
#pragma GCC unroll 16
      for (std::int64_t j = k; j < k + 32; j += 2 * W) {
        typename V::Vec even[kBlockRows], odd[kBlockRows];
#pragma GCC unroll 16
        for (std::int64_t r = 0; r < kBlockRows; ++r) {
          V::bf16_pair(static_cast<const std::uint16_t*>(a.w) + offset[r] + j, even[r], odd[r]);
        }
#pragma GCC unroll 16
        for (int m = 0; m < M; ++m) {
          const typename V::Vec xe = V::load(x + m * x_stride + j);
          const typename V::Vec xo = V::load(x + m * x_stride + j + W);
#pragma GCC unroll 16
          for (std::int64_t r = 0; r < kBlockRows; ++r) {
            group[m][r] = V::fma(odd[r], xo, V::fma(even[r], xe, group[m][r]));
          }
        }
      }
    } else {
#pragma GCC unroll 16
      for (std::int64_t j = k; j < k + 32; j += W) {
        typename V::Vec w[kBlockRows];
#pragma GCC unroll 16
        for (std::int64_t r = 0; r < kBlockRows; ++r) w[r] = load_weight<V, F>(a.w, offset[r] + j);
#pragma GCC unroll 16
        for (int m = 0; m < M; ++m) {
          const typename V::Vec xv = V::load(x + m * x_stride + j);
#pragma GCC unroll 16
          for (std::int64_t r = 0; r < kBlockRows; ++r) group[m][r] = V::fma(w[r], xv, group[m][r]);
        }
      }
    }
#pragma GCC unroll 16
    for (std::int64_t r = 0; r < kBlockRows; ++r) {
#pragma GCC unroll 16
      for (int m = 0; m < M; ++m) sum[m][r] = V::add(group[m][r], sum[m][r]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m) {
#pragma GCC unroll 16
    for (std::int64_t r = 0; r < kBlockRows; ++r) acc[m][r] = sum[m][r];
  }
}

// Calls f.template operator()<F, kPairs>() for a's float format F; kPairs: bfloat16 read in
// pairs, x in their order (a.x_pairs), for a V that can.
template <class V, class Fn>
void with_float_format(const GemvArgs& a, bool pairs, Fn&& f) {
  switch (a.format) {
    case WeightFormat::kF32: return f.template operator()<WeightFormat::kF32, false>();
    case WeightFormat::kBF16:
      if constexpr (HasBf16Pair<V>) {
        if (pairs) return f.template operator()<WeightFormat::kBF16, true>();
      }
      return f.template operator()<WeightFormat::kBF16, false>();
    case WeightFormat::kF16: return f.template operator()<WeightFormat::kF16, false>();
    case WeightFormat::kI8: return;  // never: int8 takes gemv_rows_i8
  }
}

// Note [Rows read in runs]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// direct_block steps its four rows side by side, one or two cache lines of each per step, and
// fetches the next block's lines into L1. That way the bfloat16 and float16 products read 8-20 %
// fewer bytes per second than the float32 one (bench_kernels --interleave, 2 threads, AVX-512:
// 0.80-0.92 × fp32's GB/s), although a line of them is no more work, while the int8 VNNI
// product, which reads each row in runs of 512 bytes (Note [int8 with VNNI]), read as fast as
// float32 at 4096². So the float products read each row of a block in runs of kRunBytes, one
// row after the other, and fetch the next block's run of the same row into L2 (prefetcht1):
// eight lines a row fetched into L1 held the fill buffers that the demand loads wait for.
// Measured with bench_kernels --interleave 1024x1024,2816x1024,1024x2816,4096x4096 (2 threads,
// AVX-512, passes alternated):
//   - bfloat16, in runs with an L1 prefetch: 0.85-0.95 × the old float32 product's GB/s; with
//     the L2 prefetch 0.88-1.13 (float16 0.93-1.14), the most at 4096² and 1024×2816;
//   - float32 in runs too: the same GB/s at 1024² and 2816×1024, 8-20 % more at 1024×2816 and
//     4096²; bfloat16 and float16 are then 0.89-0.98 × its GB/s.
// The AVX2 variant, measured the same way on this AVX-512 machine (bench_kernels --isa avx2,
// each format's GB/s as a ratio to the unchanged int8 product's, three passes): float32 1.69 →
// 1.71, bfloat16 1.41 → 1.38, float16 1.45 → 1.41 (medians), no gain; it keeps direct_block
// (V::kRowsInRuns: AVX-512 only). What is left of a row (k past the last whole run, a multiple
// of 32) takes direct_block. Within a run the sums use two accumulators: the products are the
// same, only the float32 summation order differs.
constexpr std::int64_t kRunBytes = 512;

// Whether V reads rows in runs (V::kRowsInRuns); the others keep direct_block.
template <class V>
concept ReadsRowsInRuns = requires {
  requires V::kRowsInRuns;
};

// acc[m][r] += x[m, 0, k_end) · w[n0 + rows[r], 0, k_end) for all of x's rows and a float weight
// (F), each row read in runs of kRunBytes (Note [Rows read in runs]); k_end is a multiple of a
// run's elements. kPairs: bfloat16 in pairs, x in GemvArgs::x_pairs' order.
template <class V, WeightFormat F, bool kPairs>
void run_block(const GemvArgs& a, const float* x, std::int64_t x_stride, std::int64_t n0,
               const std::int64_t* rows, std::int64_t k_end, typename V::Vec (*acc)[kBlockRows],
               bool prefetch_next) {
  constexpr std::int64_t W = V::kWidth;
  using Elem = std::conditional_t<F == WeightFormat::kF32, float, std::uint16_t>;
  constexpr std::int64_t kRunLength = kRunBytes / sizeof(Elem);
  static_assert(kRunLength % (2 * W) == 0);
  const auto* base = static_cast<const Elem*>(a.w);
  for (std::int64_t k0 = 0; k0 < k_end; k0 += kRunLength) {
#pragma GCC unroll 4
    for (std::int64_t r = 0; r < kBlockRows; ++r) {
      const Elem* p = base + (n0 + rows[r]) * a.w_stride + k0;
      if (prefetch_next) {
        const char* ahead = reinterpret_cast<const char*>(p + kBlockRows * a.w_stride);
#pragma GCC unroll 8
        for (std::int64_t line = 0; line < kRunBytes; line += 64) {
          __builtin_prefetch(ahead + line, 0, 2);  // prefetcht1: into L2
        }
      }
      for (std::int64_t m = 0; m < a.m_rows; ++m) {
        const float* xm = x + m * x_stride + k0;
        typename V::Vec s0 = V::zero(), s1 = V::zero();
#pragma GCC unroll 32
        for (std::int64_t j = 0; j < kRunLength; j += 2 * W) {
          typename V::Vec w0, w1;
          if constexpr (kPairs) {
            V::bf16_pair(p + j, w0, w1);
          } else {
            w0 = load_weight<V, F>(p, j);
            w1 = load_weight<V, F>(p, j + W);
          }
          s0 = V::fma(w0, V::load(xm + j), s0);
          s1 = V::fma(w1, V::load(xm + j + W), s1);
        }
        acc[m][r] = V::add(acc[m][r], V::add(s0, s1));
      }
    }
  }
}

// Whether V has the integer dot and the eight-way lane sum of Note [int8 groups in eights]:
// dot_i32(w, x) (dot_i8's lanes before the conversion to float) and sum8(const IVec* d), whose
// lane j is the sum of d[j]'s lanes, as floats.
template <class V>
concept HasSum8 = requires(const std::int8_t* p, const typename V::IVec* d) {
  V::dot_i32(p, p);
  V::sum8(d);
};

// Note [int8 groups in eights]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Per group of 32 weights of a row the integer work is four instructions (sign, sign, maddubs,
// madd), and the float work applying the group's scale was four more (a convert, the product of
// the two scales, a broadcast, an FMA): half of each group's instructions, and bench_kernels put
// the int8 product compute-bound at ~14 GB/s on one AVX2 thread, half the float32 product's
// rate. So eight groups of a row are summed together: their eight int32 vectors are reduced
// into one, lane j holding group j's exact integer sum (hadd tree, integer adds: no rounding),
// then one convert, one product of eight x scales by eight weight scales (both contiguous), one
// FMA. The float accumulator's lanes then hold different groups' terms and are summed at the
// end as before: the same products, added in another order. Groups past a multiple of eight
// take the one-group loop.

// One int8 scale as float32, stored as float or as float16 bits (HalfBits).
template <class V>
inline float scale_of(float s) {
  return s;
}
template <class V>
inline float scale_of(HalfBits s) {
  return V::half_to_float(s);
}
// kWidth consecutive int8 scales as float32.
template <class V>
inline typename V::Vec scale_vec(const float* p) {
  return V::load(p);
}
template <class V>
inline typename V::Vec scale_vec(const HalfBits* p) {
  return V::from_f16(p);
}

// Four int8 weight rows times one quantized row of x over `groups` whole groups of 32 (Note [int8
// activations]): acc[r] += Σ_g dot_i8(w[r] + 32 g, xq + 32 g) · scale_x[g] (· scale_w[r][g] for
// group-32 weights; a per-channel row's one scale is applied by the caller). `ahead`, when not
// null, is where the next block's weight bytes (and `ahead_scales` its scales) start for these
// groups: per group of this row, the next block's four rows hold kBlockRows · 32 bytes (two
// cache lines) and kBlockRows scales, so prefetching that much per group covers the next block
// by the time this one ends (rows stored back to back: w_stride = k).
template <class V, bool kPerChannel, class S>
inline void block_i8(const std::int8_t* const* w, const S* const* scale_w,
                     const std::int8_t* xq, const float* scale_x, std::int64_t groups,
                     typename V::Vec* acc, const std::int8_t* ahead = nullptr,
                     const S* ahead_scales = nullptr) {
  static_assert(kBlockRows == 4, "block_i8 is unrolled for four rows");
  const auto prefetch = [&](std::int64_t g) {
    if (ahead == nullptr) return;
    static_assert(kBlockRows * kInt8Group == 128, "two cache lines of weights per group");
    __builtin_prefetch(ahead + kBlockRows * kInt8Group * g, 0, 3);
    __builtin_prefetch(ahead + kBlockRows * kInt8Group * g + 64, 0, 3);
    // kBlockRows scales (8 or 16 bytes) per group: one line every eighth or fourth group.
    constexpr std::int64_t kGroupsPerLine = 64 / (kBlockRows * sizeof(S));
    if (!kPerChannel && g % kGroupsPerLine == 0) {
      __builtin_prefetch(ahead_scales + kBlockRows * g, 0, 3);
    }
  };
  std::int64_t g = 0;
  if constexpr (HasSum8<V>) {
    for (; g + 8 <= groups; g += 8) {
#pragma GCC unroll 8
      for (std::int64_t j = 0; j < 8; ++j) prefetch(g + j);
      const typename V::Vec sx = V::load(scale_x + g);
#pragma GCC unroll 4
      for (std::int64_t r = 0; r < kBlockRows; ++r) {
        typename V::IVec d[8];
#pragma GCC unroll 8
        for (std::int64_t j = 0; j < 8; ++j) {
          d[j] = V::dot_i32(w[r] + (g + j) * kInt8Group, xq + (g + j) * kInt8Group);
        }
        const typename V::Vec sums = V::sum8(d);
        acc[r] = kPerChannel ? V::fma(sums, sx, acc[r])
                             : V::fma(sums, V::mul(sx, scale_vec<V>(scale_w[r] + g)), acc[r]);
      }
    }
  }
  typename V::Vec a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  for (; g < groups; ++g) {
    prefetch(g);
    const std::int64_t o = g * kInt8Group;
    const typename V::Vec sx = V::broadcast(scale_x[g]);
    if constexpr (kPerChannel) {
      a0 = V::fma(V::dot_i8(w[0] + o, xq + o), sx, a0);
      a1 = V::fma(V::dot_i8(w[1] + o, xq + o), sx, a1);
      a2 = V::fma(V::dot_i8(w[2] + o, xq + o), sx, a2);
      a3 = V::fma(V::dot_i8(w[3] + o, xq + o), sx, a3);
    } else {
      a0 = V::fma(V::dot_i8(w[0] + o, xq + o), V::mul(sx, V::broadcast(scale_of<V>(scale_w[0][g]))), a0);
      a1 = V::fma(V::dot_i8(w[1] + o, xq + o), V::mul(sx, V::broadcast(scale_of<V>(scale_w[1][g]))), a1);
      a2 = V::fma(V::dot_i8(w[2] + o, xq + o), V::mul(sx, V::broadcast(scale_of<V>(scale_w[2][g]))), a2);
      a3 = V::fma(V::dot_i8(w[3] + o, xq + o), V::mul(sx, V::broadcast(scale_of<V>(scale_w[3][g]))), a3);
    }
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

// The int8 product, all of x's rows, weight rows [n_begin, n_end). K is walked in chunks of
// kChunk so that for several rows of x a block's weight bytes are re-read from L1, not memory.
template <class V, bool kPerChannel, class S>
void gemv_rows_i8(const GemvArgs& a, std::int64_t n_begin, std::int64_t n_end) {
  constexpr std::int64_t kGroupsPerChunk = kChunk / kInt8Group;
  const std::int64_t whole = a.k / kInt8Group;  // groups of 32; the rest through `tail`
  const std::int64_t rest = a.k - whole * kInt8Group;
  const std::int64_t x_groups = a.xq_stride / kInt8Group;
  alignas(32) std::int8_t tail[kBlockRows][kInt8Group];
  typename V::Vec acc[kDecodeMaxRows][kBlockRows];
  for (std::int64_t n0 = n_begin; n0 < n_end; n0 += kBlockRows) {
    const std::int64_t rows_here = std::min(kBlockRows, n_end - n0);
    const std::int8_t* w[kBlockRows];
    const S* scale_w[kBlockRows];
    int8_block_rows(a, n0, rows_here, w, scale_w);
    for (std::int64_t m = 0; m < a.m_rows; ++m) {
      for (auto& v : acc[m]) v = V::zero();
    }
    // The next block's bytes, fetched while this one is computed; none past the thread's rows.
    const bool next = n0 + 2 * kBlockRows <= n_end;
    for (std::int64_t g0 = 0; g0 < whole; g0 += kGroupsPerChunk) {
      const std::int64_t groups = std::min(kGroupsPerChunk, whole - g0);
      const std::int8_t* wc[kBlockRows];
      const S* sc[kBlockRows];
      for (std::int64_t r = 0; r < kBlockRows; ++r) {
        wc[r] = w[r] + g0 * kInt8Group;
        sc[r] = scale_w[r] + (kPerChannel ? 0 : g0);
      }
      const std::int8_t* ahead =
          next ? w[0] + kBlockRows * (a.w_stride + g0 * kInt8Group) : nullptr;
      const S* ahead_scales =
          next && !kPerChannel ? scale_w[0] + kBlockRows * (a.n_groups + g0) : nullptr;
      for (std::int64_t m = 0; m < a.m_rows; ++m) {
        block_i8<V, kPerChannel, S>(wc, sc, a.xq + m * a.xq_stride + g0 * kInt8Group,
                                 a.x_scales + m * x_groups + g0, groups, acc[m],
                                 m == 0 ? ahead : nullptr, ahead_scales);
      }
    }
    if (rest > 0) {
      // The last, short group: its bytes copied into zeroed 32-byte rows (reading 32 from the
      // weight could run past its end); x's quantized row is zero beyond k.
      const std::int8_t* wt[kBlockRows];
      const S* st[kBlockRows];
      for (std::int64_t r = 0; r < kBlockRows; ++r) {
        std::memset(tail[r], 0, sizeof tail[r]);
        std::memcpy(tail[r], w[r] + whole * kInt8Group, rest);
        wt[r] = tail[r];
        st[r] = scale_w[r] + (kPerChannel ? 0 : whole);
      }
      for (std::int64_t m = 0; m < a.m_rows; ++m) {
        block_i8<V, kPerChannel, S>(wt, st, a.xq + m * a.xq_stride + whole * kInt8Group,
                                 a.x_scales + m * x_groups + whole, 1, acc[m]);
      }
    }
    for (std::int64_t m = 0; m < a.m_rows; ++m) {
      for (std::int64_t r = 0; r < rows_here; ++r) {
        const float total = V::sum(acc[m][r]);
        a.y[m * a.y_stride + n0 + r] = kPerChannel ? total * scale_of<V>(scale_w[r][0]) : total;
      }
    }
  }
}

// Whether V has the int8 dot product (a V without it hands int8 to another variant).
template <class V>
concept HasDotI8 = requires(const std::int8_t* p) {
  V::dot_i8(p, p);
};

template <class V>
void gemv_rows(const GemvArgs& a, std::int64_t n_begin, std::int64_t n_end) {
  if constexpr (HasDotI8<V>) {
    if (a.format == WeightFormat::kI8) {
      // One scale per row (per channel, or a row of at most 32): applied once, at the end.
      return with_scale_type(a, [&]<class S>() {
        if (a.n_groups == 1) return gemv_rows_i8<V, /*kPerChannel=*/true, S>(a, n_begin, n_end);
        return gemv_rows_i8<V, /*kPerChannel=*/false, S>(a, n_begin, n_end);
      });
    }
  }
  constexpr std::int64_t W = V::kWidth;
  alignas(64) float buf[kBlockRows][kChunk];
  typename V::Vec acc[kDecodeMaxRows][kBlockRows];
  // Whole groups of 32 directly (decode sizes), the rest (< 32 elements) through the buffer.
  const bool direct = a.m_rows <= kDirectMaxRows;
  const std::int64_t direct_k = direct ? a.k / 32 * 32 : 0;
  const float* x = a.x;
  std::int64_t x_stride = a.x_stride;
  // Note [bfloat16 in pairs]: x in pair order, made once per gemv_group() call.
  const bool pairs = HasBf16Pair<V> && a.format == WeightFormat::kBF16 && direct_k > 0 &&
                     a.x_pairs != nullptr && a.pair_width == W;
  if (pairs) {
    x = a.x_pairs;
    x_stride = direct_k;
  }
  // Note [Rows read in runs]: whole runs first, the rest of each row side by side.
  const std::int64_t run_length = kRunBytes / bytes_per_element(a.format);
  const std::int64_t run_k = ReadsRowsInRuns<V> ? direct_k / run_length * run_length : 0;
  for (std::int64_t n0 = n_begin; n0 < n_end; n0 += kBlockRows) {
    const std::int64_t rows_here = std::min(kBlockRows, n_end - n0);
    for (std::int64_t m = 0; m < a.m_rows; ++m) {
      for (auto& v : acc[m]) v = V::zero();
    }
    if (direct) {
      // A short last block repeats its first row (computed, then dropped).
      const std::int64_t rows[kBlockRows] = {0, std::min<std::int64_t>(1, rows_here - 1),
                                             std::min<std::int64_t>(2, rows_here - 1),
                                             std::min<std::int64_t>(3, rows_here - 1)};
      const bool next = n0 + 2 * kBlockRows <= n_end;
      with_float_format<V>(a, pairs, [&]<WeightFormat F, bool kPairs>() {
        if (run_k > 0) run_block<V, F, kPairs>(a, x, x_stride, n0, rows, run_k, acc, next);
        if (run_k == direct_k) return;
        std::int64_t m = 0;
        for (; m + 2 <= a.m_rows; m += 2) {
          direct_block<V, F, 2, kPairs>(a, x + m * x_stride, x_stride, n0, rows, run_k, direct_k,
                                        acc + m, next && m == 0);
        }
        if (m < a.m_rows) {
          direct_block<V, F, 1, kPairs>(a, x + m * x_stride, x_stride, n0, rows, run_k, direct_k,
                                        acc + m, next && m == 0);
        }
      });
    }
    for (std::int64_t k0 = direct_k; k0 < a.k; k0 += kChunk) {
      const std::int64_t len = std::min(kChunk, a.k - k0);
      const std::int64_t padded_len = (len + W - 1) / W * W;
      const float* rows[kBlockRows];
      for (std::int64_t r = 0; r < kBlockRows; ++r) {
        if (r >= rows_here) {
          rows[r] = rows[0];  // a short last block: computed, then dropped
        } else if (a.format == WeightFormat::kF32 && len == padded_len) {
          rows[r] = static_cast<const float*>(a.w) + (n0 + r) * a.w_stride + k0;
        } else {
          convert_row<V>(a, n0 + r, k0, len, padded_len, buf[r]);
          rows[r] = buf[r];
        }
      }
      for (std::int64_t m = 0; m < a.m_rows; ++m) {
        dot_block<V>(rows, a.x + m * a.x_stride + k0, padded_len, acc[m]);
      }
    }
    for (std::int64_t m = 0; m < a.m_rows; ++m) {
      for (std::int64_t r = 0; r < rows_here; ++r) a.y[m * a.y_stride + n0 + r] = V::sum(acc[m][r]);
    }
  }
}

}  // namespace ferry::kernels::detail
