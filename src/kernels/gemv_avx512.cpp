// The AVX-512 F variant of the decode product. Only this file's own functions are
// compiled for those instructions (the pragma below comes after every include), so the binary
// still runs on any x86-64; gemv() calls it only when the CPU has them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gemv.h"
#include "int8_group.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), a self-initialised variable
// (`__m512 __Y = __Y;`) that -Wmaybe-uninitialized reports once inlined: a false alarm in the
// compiler's own header, silenced for this file only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "gemv_block.h"

namespace ferry::kernels::detail {
namespace {

struct Avx512 {
  static constexpr std::int64_t kWidth = 16;
  static constexpr bool kRowsInRuns = true;  // Note [Rows read in runs]
  using Vec = __m512;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec from_bf16(const std::uint16_t* p) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
  // Note [bfloat16 in pairs]: 32 bfloat16 as elements 0, 2, .., 30 and 1, 3, .., 31.
  static void bf16_pair(const std::uint16_t* p, Vec& even, Vec& odd) {
    const __m512i v = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    odd =
        _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  static Vec from_f16(const std::uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec broadcast(float s) { return _mm512_set1_ps(s); }
  static float sum(Vec v) { return _mm512_reduce_add_ps(v); }
  static float half_to_float(std::uint16_t bits) { return _cvtsh_ss(bits); }
};

}  // namespace

// Note [int8 groups by AVX-512]: quantize_int8_group's rule on 32 floats in two vectors. The
// maximum is exact whatever the order, the scale and its inverse are the same scalar divisions,
// and rounding each v · inverse to nearest even (roundscale) is what the portable code's
// add-and-subtract of 1.5 · 2^23 does, so values and scale are bit for bit the portable ones.
// A group with a NaN (max_ps may drop it), an infinity, all zeros or a scale whose inverse
// overflows takes the portable code, which has the rule for each.
float quantize_int8_group32_avx512(const float* src, std::int8_t* dst) {
  const __m512 lo = _mm512_loadu_ps(src);
  const __m512 hi = _mm512_loadu_ps(src + 16);
  const bool unordered =
      (_mm512_cmp_ps_mask(lo, lo, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(hi, hi, _CMP_UNORD_Q)) != 0;
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
  const float scale = amax / 127.0f;
  const float inverse = 1.0f / scale;
  if (unordered || !(amax <= std::numeric_limits<float>::max()) || !(scale > 0.0f) ||
      !std::isfinite(inverse)) {
    return quantize_int8_group(src, kInt8Group, dst);
  }
  const __m512 inv = _mm512_set1_ps(inverse);
  const __m512 top = _mm512_set1_ps(127.0f);
  const __m512 bottom = _mm512_set1_ps(-127.0f);
  auto rounded = [&](__m512 v) {
    const __m512 q =
        _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(q, bottom), top)));
  };
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), rounded(lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), rounded(hi));
  return scale;
}

void gemv_rows_avx512(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  // AVX-512 F has no byte multiply-add (that is AVX-512 BW / VNNI, which isa.cpp does not
  // detect): int8 runs the AVX2 variant's integer product, which every AVX-512 CPU here has.
  if (args.format == WeightFormat::kI8) return gemv_rows_avx2(args, n_begin, n_end);
  gemv_rows<Avx512>(args, n_begin, n_end);
}

}  // namespace ferry::kernels::detail
#pragma GCC diagnostic pop
#pragma GCC pop_options

#else  // not x86-64: never selected (detected_isa() is kPortable), defined for the linker.
namespace ferry::kernels::detail {
float quantize_int8_group32_avx512(const float* src, std::int8_t* dst) {
  return quantize_int8_group(src, kInt8Group, dst);
}
void gemv_rows_avx512(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  gemv_rows_portable(args, n_begin, n_end);
}
}  // namespace ferry::kernels::detail
#endif
