#pragma once
// Private to the kernels layer: the decode product y[m, n] = Σ_k x[m, k] · w[n, k] over a weight
// in its stored format, and its per-instruction-set variants (gemv_<isa>.cpp).

#include <cstdint>
#include <span>

#include "ferry/kernels/isa.h"
#include "int8_group.h"

namespace ferry::kernels::detail {

// How a weight row's bytes are read.
enum class WeightFormat { kF32, kBF16, kF16, kI8 };

constexpr std::int64_t bytes_per_element(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32: return 4;
    case WeightFormat::kBF16:
    case WeightFormat::kF16: return 2;
    case WeightFormat::kI8: return 1;
  }
  return 4;
}

// Decode-sized inputs only: beyond this many rows BLAS on converted tiles is faster.
constexpr std::int64_t kDecodeMaxRows = 16;
// x's rows are padded with zeros to a multiple of this (the widest vector, in floats), so the
// variants need no tail code for x.
constexpr std::int64_t kPadFloats = 16;
// K is processed in chunks of this many elements (a multiple of the int8 group size, 32).
constexpr std::int64_t kChunk = 512;
// Weight rows per block: each block's rows are converted once per chunk and used for all of x's
// rows, so every weight byte comes from memory once per call.
constexpr std::int64_t kBlockRows = 4;

struct GemvArgs {
  const float* x = nullptr;   // [m_rows, x_stride] float32, zero beyond k
  std::int64_t m_rows = 0;    // 1..kDecodeMaxRows
  std::int64_t x_stride = 0;  // ≥ k, a multiple of kPadFloats
  const void* w = nullptr;    // [n, w_stride] in `format`, the first k of each row used
  WeightFormat format = WeightFormat::kF32;
  std::int64_t w_stride = 0;     // elements between rows
  const void* scales = nullptr;  // kI8 only: [n, n_groups], value = int8 × scale
  bool half_scales = false;      // kI8 only: scales are float16 (Note [int8 scales in
                                 // float16] in quantized.cpp), else float32
  std::int64_t group = 0;        // kI8 only: elements per scale (32, or ≥ k for per channel)
  std::int64_t n_groups = 0;     // kI8 only
  // kI8 only, filled by gemv(): x quantized per group of 32 (Note [int8 activations]).
  const std::int8_t* xq = nullptr;        // [m_rows, xq_stride], zero beyond k
  std::int64_t xq_stride = 0;             // ceil(k / 32) · 32
  const float* x_scales = nullptr;        // [m_rows, ceil(k / 32)]
  const std::int32_t* xq_sums = nullptr;  // [m_rows, ceil(k / 32)]: Σ of each group of xq
                                          // (Isa::kAvx512Vnni only)
  // kBF16 only, filled by gemv_group() for the variants that read bfloat16 in pairs (Note
  // [bfloat16 in pairs] in gemv_block.h): x's rows [m_rows, k rounded down to 32], each block of
  // 2 · pair_width elements stored as its even elements, then its odd ones. Null: no pairs.
  const float* x_pairs = nullptr;
  std::int64_t pair_width = 0;  // the variant's floats per vector: 8 (AVX2) or 16 (AVX-512)
  std::int64_t k = 0;
  float* y = nullptr;  // [m_rows, y_stride] float32
  std::int64_t y_stride = 0;
};

// An int8 weight's scales as stored: float32, or float16 as its bits.
using HalfBits = std::uint16_t;

// The int8 block at row n0 (rows_here ≤ kBlockRows of them): each row's values and scales, S
// being the scales' stored type (float or HalfBits, as a.half_scales says). A short last block
// repeats its last row (computed, then dropped). Included before any variant's target pragma, so
// compiled for the baseline everywhere.
template <class S>
inline void int8_block_rows(const GemvArgs& a, std::int64_t n0, std::int64_t rows_here,
                            const std::int8_t** w, const S** scale_w) {
  const auto* values = static_cast<const std::int8_t*>(a.w);
  const auto* scales = static_cast<const S*>(a.scales);
  for (std::int64_t r = 0; r < kBlockRows; ++r) {
    const std::int64_t row = n0 + (r < rows_here ? r : rows_here - 1);
    w[r] = values + row * a.w_stride;
    scale_w[r] = scales + row * a.n_groups;
  }
}

// Calls f.template operator()<S>() with S the type a's int8 scales are stored in.
template <class F>
inline decltype(auto) with_scale_type(const GemvArgs& a, F&& f) {
  if (a.half_scales) return f.template operator()<HalfBits>();
  return f.template operator()<float>();
}

// Computes y's columns [n_begin, n_end) (all of x's rows); n_begin is a multiple of kBlockRows.
using GemvRowsFn = void (*)(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end);
void gemv_rows_portable(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end);
void gemv_rows_avx2(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end);
void gemv_rows_avx512(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end);
// kI8 with AVX-512 VNNI (Note [int8 with VNNI]); every other format as gemv_rows_avx512.
void gemv_rows_avx512_vnni(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end);

// quantize_int8_group(src, 32, dst) by AVX-512 F, bit for bit the same (Note [int8 groups by
// AVX-512] in gemv_avx512.cpp); only for a CPU that has it.
float quantize_int8_group32_avx512(const float* src, std::int8_t* dst);

// quantize_int8_group(src, len, dst) by the widest code `isa` allows: AVX-512 for a whole group
// of 32, the portable code otherwise. The same values and scale either way.
inline float quantize_int8_group(const float* src, std::int64_t len, std::int8_t* dst, Isa isa) {
  return isa >= Isa::kAvx512 && len == kInt8Group ? quantize_int8_group32_avx512(src, dst)
                                                  : quantize_int8_group(src, len, dst);
}

// Runs `isa`'s variant over all n rows of the weight, threaded over blocks of rows with
// LibTorch's pool (inline when the weight is small). For kI8 it first quantizes x (so `args`' xq,
// xq_stride, x_scales and, for kAvx512Vnni, xq_sums are its own).
void gemv(const GemvArgs& args, std::int64_t n, Isa isa);

// gemv of each group[i] (n[i] rows of its weight) in one parallel loop (Note [Grouped products]
// in gemv.cpp): the products share x, m_rows, k and the weight format; x is quantized once for
// kI8, and each group[i]'s xq fields are set. Each y equals group[i]'s own gemv() bit for bit.
void gemv_group(std::span<GemvArgs> group, std::span<const std::int64_t> n, Isa isa);

}  // namespace ferry::kernels::detail
