#pragma once
// Private to the kernels layer: the block loop of the decode product, written once over a vector
// type V and instantiated by each gemv_<isa>.cpp with its own V (an anonymous-namespace type, so
// each instantiation is its own function, compiled for that file's instruction set).
//
// V provides: kWidth (floats per vector), Vec, zero(), load(const float*), store(float*, Vec),
// from_bf16(const uint16_t*), from_f16(const uint16_t*), from_i8(const int8_t*), scale(Vec, float),
// fma(a, b, c) = a·b + c, add(a, b), broadcast(float), sum(Vec) (horizontal), and scalar tails half_to_float(uint16_t).

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gemv.h"

namespace ferry::kernels::detail {

// static: each gemv_<isa>.cpp compiles its own copy for its instruction set (no ODR merging).
static inline float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

// The scale index of element k of an int8 row: a group is 32 elements, or the whole row.
inline std::int64_t group_index(const GemvArgs& a, std::int64_t k) {
  return a.n_groups == 1 ? 0 : k >> 5;
}

// Writes weight row n's elements [k0, k0 + len) as float32 to dst, then zeros up to padded_len.
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
    case WeightFormat::kI8: {
      // k0 is a multiple of kChunk, hence of 32, and a group is 32 or the whole row: a vector
      // of W ≤ 32 elements never straddles two groups.
      const auto* src = static_cast<const std::int8_t*>(a.w) + row;
      const float* scales = a.scales + n * a.n_groups;
      for (; k < vec_len; k += W) {
        V::store(dst + k, V::scale(V::from_i8(src + k), scales[group_index(a, k0 + k)]));
      }
      for (; k < len; ++k) dst[k] = static_cast<float>(src[k]) * scales[group_index(a, k0 + k)];
      break;
    }
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
constexpr std::int64_t kDirectMaxRows = 2;

// Weight row `row`'s W elements at k as floats (int8: times the group's scale `s`).
template <class V, WeightFormat F>
inline typename V::Vec load_weight(const void* base, std::int64_t offset, float s) {
  if constexpr (F == WeightFormat::kF32) {
    return V::load(static_cast<const float*>(base) + offset);
  } else if constexpr (F == WeightFormat::kBF16) {
    return V::from_bf16(static_cast<const std::uint16_t*>(base) + offset);
  } else if constexpr (F == WeightFormat::kF16) {
    return V::from_f16(static_cast<const std::uint16_t*>(base) + offset);
  } else {
    (void)s;  // direct_block scales whole groups
    return V::from_i8(static_cast<const std::int8_t*>(base) + offset);
  }
}

// acc[m][r] += x[m, 0, k_end) · w[n0 + rows[r], 0, k_end) for M rows of x, reading each weight
// vector once; k_end is a multiple of 32 (so of W, and whole int8 groups).
template <class V, WeightFormat F, int M>
void direct_block(const GemvArgs& a, std::int64_t n0, const std::int64_t* rows,
                  std::int64_t k_end, typename V::Vec (*acc)[kBlockRows]) {
  constexpr std::int64_t W = V::kWidth;
  typename V::Vec sum[M][kBlockRows];
  for (int m = 0; m < M; ++m) {
    for (std::int64_t r = 0; r < kBlockRows; ++r) sum[m][r] = acc[m][r];
  }
  std::int64_t offset[kBlockRows];
  for (std::int64_t r = 0; r < kBlockRows; ++r) offset[r] = (n0 + rows[r]) * a.w_stride;
  for (std::int64_t k = 0; k < k_end; k += 32) {
    // int8: the group's products are summed unscaled, then scaled once (one FMA per group
    // instead of a multiply per vector).
    typename V::Vec group[M][kBlockRows];
    for (int m = 0; m < M; ++m) {
      for (std::int64_t r = 0; r < kBlockRows; ++r) group[m][r] = V::zero();
    }
    for (std::int64_t j = k; j < k + 32; j += W) {
      typename V::Vec w[kBlockRows];
      for (std::int64_t r = 0; r < kBlockRows; ++r) w[r] = load_weight<V, F>(a.w, offset[r] + j, 1.0f);
      for (int m = 0; m < M; ++m) {
        const typename V::Vec xv = V::load(a.x + m * a.x_stride + j);
        for (std::int64_t r = 0; r < kBlockRows; ++r) group[m][r] = V::fma(w[r], xv, group[m][r]);
      }
    }
    for (std::int64_t r = 0; r < kBlockRows; ++r) {
      if constexpr (F == WeightFormat::kI8) {
        const float s = a.scales[(n0 + rows[r]) * a.n_groups + group_index(a, k)];
        for (int m = 0; m < M; ++m) sum[m][r] = V::fma(group[m][r], V::broadcast(s), sum[m][r]);
      } else {
        for (int m = 0; m < M; ++m) sum[m][r] = V::add(group[m][r], sum[m][r]);
      }
    }
  }
  for (int m = 0; m < M; ++m) {
    for (std::int64_t r = 0; r < kBlockRows; ++r) acc[m][r] = sum[m][r];
  }
}

template <class V, int M>
void direct_block_any(const GemvArgs& a, std::int64_t n0, const std::int64_t* rows,
                      std::int64_t k_end, typename V::Vec (*acc)[kBlockRows]) {
  switch (a.format) {
    case WeightFormat::kF32: return direct_block<V, WeightFormat::kF32, M>(a, n0, rows, k_end, acc);
    case WeightFormat::kBF16: return direct_block<V, WeightFormat::kBF16, M>(a, n0, rows, k_end, acc);
    case WeightFormat::kF16: return direct_block<V, WeightFormat::kF16, M>(a, n0, rows, k_end, acc);
    case WeightFormat::kI8: return direct_block<V, WeightFormat::kI8, M>(a, n0, rows, k_end, acc);
  }
}

template <class V>
void gemv_rows(const GemvArgs& a, std::int64_t n_begin, std::int64_t n_end) {
  constexpr std::int64_t W = V::kWidth;
  alignas(64) float buf[kBlockRows][kChunk];
  typename V::Vec acc[kDecodeMaxRows][kBlockRows];
  for (std::int64_t n0 = n_begin; n0 < n_end; n0 += kBlockRows) {
    const std::int64_t rows_here = std::min(kBlockRows, n_end - n0);
    for (std::int64_t m = 0; m < a.m_rows; ++m) {
      for (auto& v : acc[m]) v = V::zero();
    }
    // Few rows of x: whole groups of 32 directly, the rest (< 32 elements) through the buffer.
    std::int64_t k_start = 0;
    if (a.m_rows <= kDirectMaxRows) {
      k_start = a.k / 32 * 32;
      // A short last block repeats its first row (computed, then dropped).
      const std::int64_t rows[kBlockRows] = {0, std::min<std::int64_t>(1, rows_here - 1),
                                             std::min<std::int64_t>(2, rows_here - 1),
                                             std::min<std::int64_t>(3, rows_here - 1)};
      if (a.m_rows == 1) direct_block_any<V, 1>(a, n0, rows, k_start, acc);
      else direct_block_any<V, 2>(a, n0, rows, k_start, acc);
    }
    for (std::int64_t k0 = k_start; k0 < a.k; k0 += kChunk) {
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
