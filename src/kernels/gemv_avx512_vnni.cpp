// The int8 decode product with AVX-512 VNNI (Isa::kAvx512Vnni). Only this file's own functions
// are compiled for those instructions (the pragma below comes after every include), so the
// binary still runs on any x86-64; gemv() calls it only when the CPU has them.
#include <algorithm>
#include <cstdint>

#include "gemv.h"
#include "int8_group.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
// As in gemv_avx512.cpp: GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized in its own header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Note [int8 with VNNI]
// ~~~~~~~~~~~~~~~~~~~~~
// The AVX2 int8 product spends four instructions on each 32 weights (two sign moves, maddubs,
// madd); a perf profile of an int8 decode put half of the product's samples on those
// instructions and a quarter on the loads. VNNI's vpdpbusd multiplies
// 64 unsigned bytes by 64 signed bytes and sums each four into an int32 lane, in one instruction.
// Its unsigned side is the weight with its top bit flipped (w + 128, one xor), so each group's
// integer sum is Σ (w + 128) · x_q = Σ w · x_q + 128 · Σ x_q, and 128 · Σ x_q (xq_sums, computed
// with x's quantization) is taken off after the sum: exact in int32 (|lane| ≤ 4 · 255 · 127), so
// the integer sums equal the AVX2 variant's and only the float32 summation order differs.
//
// A row's 512-byte chunk (16 groups) is eight vectors, each holding two groups in its low and
// high 256 bits. Their lanes are reduced into one vector whose lane g is group g's sum
// (group_sums: two rounds of unpack + add within 128-bit lanes, one across them, then one
// permute into group order), so a chunk's scaling is one subtract, one convert, one product of
// the 16 activation scales by the 16 weight scales, and one FMA, as in Note [int8 groups in
// eights]. A chunk shorter than 512 bytes (k not a multiple of 512, or its last group short)
// uses masked loads: masked weight bytes, x bytes and scales read as zero and add nothing, and
// nothing past the weight's or x's end is read.
//
// While a block is computed, the next block's bytes of the same chunk are prefetched (eight
// lines per row and chunk, and the rows' scales): without it this variant read at 10-20 GB/s
// (2 threads, bench_kernels 1024² and 4096²), slower than the AVX2 variant, whose loop
// prefetches the same way; with it, 1.1-1.4 × the AVX2 variant's GB/s (2816² and 4096²: ~38-50
// GB/s). Decode of the reference model with --quantize int8 (2 threads, 64 tokens, 4 alternated
// runs): 16.6-18.7 ms per token with the AVX2 variant, 12.0-13.9 with this one. Fetched into L2
// (prefetcht1) rather than L1, as the float products do (Note [Rows read in runs] in
// gemv_block.h): 0.76-0.96 × the float32 product's GB/s against 0.74-0.89 into L1
// (bench_kernels --interleave 1024x1024,2816x1024,1024x2816,4096x4096, three alternated passes).
//
// One row of x (a decode step of one sequence, the common case) has its own instance (M = 1):
// with x's row count known, the four rows' sums are kept in registers across the chunks instead
// of being loaded and stored per chunk through an array indexed by a run-time row. Weights in
// cache (bench_kernels --hot 1, 1024x2816): 36 → 41-42 GB/s; from memory, three alternated
// passes over 3072x1024, 1024x1024, 5632x1024 and 1024x2816 (the reference model's grouped
// products): 0.76-0.88 → 0.79-0.89 × the float32 product's GB/s, 2-4 % on each shape.

namespace ferry::kernels::detail {
namespace {

constexpr std::int64_t kVectors = kChunk / 64;  // per row and chunk
static_assert(kVectors == 8 && kChunk / kInt8Group == 16,
              "group_sums reduces 8 vectors of 2 groups");

// Within each 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
inline __m512i pair32(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}

// Within each 128-bit lane, for ab = pair32(a, b) and cd = pair32(c, d): [Σa, Σb, Σc, Σd].
inline __m512i pair64(__m512i ab, __m512i cd) {
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

// Lane g (0..15) = the sum of the 8 int32 lanes of group g, where vector j holds group 2j in its
// low 256 bits and group 2j + 1 in its high 256 bits.
inline __m512i group_sums(const __m512i* d) {
  const __m512i f0 = pair64(pair32(d[0], d[1]), pair32(d[2], d[3]));  // vectors 0..3
  const __m512i f1 = pair64(pair32(d[4], d[5]), pair32(d[6], d[7]));  // vectors 4..7
  // 128-bit lanes 0 + 1 of a vector are its even group, 2 + 3 its odd one: the sum of
  // [f0.0, f0.2, f1.0, f1.2] and [f0.1, f0.3, f1.1, f1.3] holds groups
  // [0 2 4 6 | 1 3 5 7 | 8 10 12 14 | 9 11 13 15].
  const __m512i s = _mm512_add_epi32(_mm512_shuffle_i32x4(f0, f1, _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_i32x4(f0, f1, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
  return _mm512_permutexvar_epi32(order, s);
}

// Bytes [0, n) of 64 selected (n clamped to [0, 64]).
inline __mmask64 byte_mask(std::int64_t n) {
  if (n >= 64) return ~__mmask64{0};
  if (n <= 0) return 0;
  return (__mmask64{1} << n) - 1;
}

template <bool kFull>
inline __m512i load_bytes(const std::int8_t* p, __mmask64 mask) {
  if constexpr (kFull) return _mm512_loadu_si512(p);
  return _mm512_maskz_loadu_epi8(mask, p);
}

// The 16 scales of a chunk's groups (those of `mask`; the others zero) as float32.
inline __m512 load_scales(__mmask16 mask, const float* p) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 load_scales(__mmask16 mask, const HalfBits* p) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
}
inline float scale_of(float s) { return s; }
inline float scale_of(HalfBits s) { return _cvtsh_ss(s); }

// One chunk of a block: acc[m][r] += the chunk's groups of weight row r times x's row m, scaled.
// `bytes` (1..kChunk) of each row are read from w[r] + k0; kFull: bytes == kChunk, no masks.
// M: x's rows when known at compile time (1: a decode step of one sequence, whose sums then stay
// in registers), 0: a.m_rows.
template <bool kFull, bool kPerChannel, class S, int M>
inline void chunk(const GemvArgs& a, const std::int8_t* const* w, const S* const* scale_w,
                  std::int64_t k0, std::int64_t bytes, bool prefetch, __m512 (*acc)[kBlockRows]) {
  const std::int64_t m_rows = M > 0 ? M : a.m_rows;
  const std::int64_t g0 = k0 / kInt8Group;
  const std::int64_t x_groups = a.xq_stride / kInt8Group;
  const std::int64_t groups = (bytes + kInt8Group - 1) / kInt8Group;
  const __mmask16 group_mask =
      kFull ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << groups) - 1);
  __mmask64 masks[kVectors];
#pragma GCC unroll 8
  for (std::int64_t j = 0; j < kVectors; ++j)
    masks[j] = kFull ? ~__mmask64{0} : byte_mask(bytes - 64 * j);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));

#pragma GCC unroll 4
  for (std::int64_t r = 0; r < kBlockRows; ++r) {
    if (prefetch) {
      // The next block's row r, this chunk's bytes and scales, into L2 (Note [int8 with VNNI]).
      const std::int8_t* next = w[r] + kBlockRows * a.w_stride + k0;
#pragma GCC unroll 8
      for (std::int64_t j = 0; j < kVectors; ++j) __builtin_prefetch(next + 64 * j, 0, 2);
      if constexpr (!kPerChannel)
        __builtin_prefetch(scale_w[r] + kBlockRows * a.n_groups + g0, 0, 2);
    }
    __m512i wv[kVectors];
#pragma GCC unroll 8
    for (std::int64_t j = 0; j < kVectors; ++j)
      wv[j] = _mm512_xor_si512(load_bytes<kFull>(w[r] + k0 + 64 * j, masks[j]), flip);
    // Masked-off lanes: a zero weight byte flips to 128, times a zero x byte.
    __m512 sw = _mm512_setzero_ps();
    if constexpr (!kPerChannel) sw = load_scales(group_mask, scale_w[r] + g0);
    for (std::int64_t m = 0; m < m_rows; ++m) {
      const std::int8_t* xq = a.xq + m * a.xq_stride + k0;
      __m512i d[kVectors];
#pragma GCC unroll 8
      for (std::int64_t j = 0; j < kVectors; ++j) {
        d[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[j],
                                   load_bytes<kFull>(xq + 64 * j, masks[j]));
      }
      const __m512i x_sums = _mm512_maskz_loadu_epi32(group_mask, a.xq_sums + m * x_groups + g0);
      const __m512i exact = _mm512_sub_epi32(group_sums(d), _mm512_slli_epi32(x_sums, 7));
      const __m512 sx = _mm512_maskz_loadu_ps(group_mask, a.x_scales + m * x_groups + g0);
      acc[m][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact),
                                  kPerChannel ? sx : _mm512_mul_ps(sx, sw), acc[m][r]);
    }
  }
}

template <bool kPerChannel, class S, int M>
void rows_i8(const GemvArgs& a, std::int64_t n_begin, std::int64_t n_end) {
  const std::int64_t m_rows = M > 0 ? M : a.m_rows;
  __m512 acc[M > 0 ? M : kDecodeMaxRows][kBlockRows];
  for (std::int64_t n0 = n_begin; n0 < n_end; n0 += kBlockRows) {
    const std::int64_t rows_here = std::min(kBlockRows, n_end - n0);
    const std::int8_t* w[kBlockRows];
    const S* scale_w[kBlockRows];
    int8_block_rows(a, n0, rows_here, w, scale_w);
    for (std::int64_t m = 0; m < m_rows; ++m) {
      for (auto& v : acc[m]) v = _mm512_setzero_ps();
    }
    // Never past the thread's rows (rows stored back to back: w_stride = k).
    const bool prefetch = n0 + 2 * kBlockRows <= n_end;
    std::int64_t k0 = 0;
    for (; k0 + kChunk <= a.k; k0 += kChunk) {
      chunk<true, kPerChannel, S, M>(a, w, scale_w, k0, kChunk, prefetch, acc);
    }
    if (k0 < a.k) chunk<false, kPerChannel, S, M>(a, w, scale_w, k0, a.k - k0, prefetch, acc);
    for (std::int64_t m = 0; m < m_rows; ++m) {
      for (std::int64_t r = 0; r < rows_here; ++r) {
        const float total = _mm512_reduce_add_ps(acc[m][r]);
        a.y[m * a.y_stride + n0 + r] = kPerChannel ? total * scale_of(scale_w[r][0]) : total;
      }
    }
  }
}

}  // namespace

void gemv_rows_avx512_vnni(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  if (args.format != WeightFormat::kI8) return gemv_rows_avx512(args, n_begin, n_end);
  // One scale per row (per channel, or a row of at most 32): applied once, at the end.
  with_scale_type(args, [&]<class S>() {
    if (args.n_groups == 1) return rows_i8</*kPerChannel=*/true, S, 0>(args, n_begin, n_end);
    if (args.m_rows == 1) return rows_i8</*kPerChannel=*/false, S, 1>(args, n_begin, n_end);
    rows_i8</*kPerChannel=*/false, S, 0>(args, n_begin, n_end);
  });
}

}  // namespace ferry::kernels::detail
#pragma GCC diagnostic pop
#pragma GCC pop_options

#else  // not x86-64: never selected (detected_isa() is kPortable), defined for the linker.
namespace ferry::kernels::detail {
void gemv_rows_avx512_vnni(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  gemv_rows_portable(args, n_begin, n_end);
}
}  // namespace ferry::kernels::detail
#endif
