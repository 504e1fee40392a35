// The AVX2 + FMA + F16C variant of the decode product. Only this file's own functions are
// compiled for those instructions (the pragma below comes after every include), so the binary
// still runs on any x86-64; gemv() calls it only when the CPU has them.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gemv.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "gemv_block.h"

namespace ferry::kernels::detail {
namespace {

struct Avx2 {
  static constexpr std::int64_t kWidth = 8;
  using Vec = __m256;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec from_bf16(const std::uint16_t* p) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
  // Note [bfloat16 in pairs]: 16 bfloat16 as elements 0, 2, .., 14 and 1, 3, .., 15.
  static void bf16_pair(const std::uint16_t* p, Vec& even, Vec& odd) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  static Vec from_f16(const std::uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  using IVec = __m256i;
  static IVec dot_i32(const std::int8_t* w, const std::int8_t* x) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
    // maddubs multiplies unsigned by signed bytes: |w| as the unsigned side (-128 becomes 0x80,
    // read as 128) and w's sign moved onto x. |x| ≤ 127, so a pair sums to at most
    // 2 · 128 · 127 < 2^15: the int16 sums never saturate.
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  }
  static Vec dot_i8(const std::int8_t* w, const std::int8_t* x) {
    return _mm256_cvtepi32_ps(dot_i32(w, x));
  }
  // Note [int8 groups in eights]: lane j = Σ lanes of d[j] (exact in int32: |Σ| < 2^20).
  static Vec sum8(const IVec* d) {
    // Each hadd adds neighbouring lanes within each 128-bit half.
    const __m256i h01 = _mm256_hadd_epi32(d[0], d[1]);
    const __m256i h23 = _mm256_hadd_epi32(d[2], d[3]);
    const __m256i h45 = _mm256_hadd_epi32(d[4], d[5]);
    const __m256i h67 = _mm256_hadd_epi32(d[6], d[7]);
    // Lanes: d0..d3's low-half sums, then their high-half sums; the same for d4..d7.
    const __m256i q0 = _mm256_hadd_epi32(h01, h23);
    const __m256i q1 = _mm256_hadd_epi32(h45, h67);
    const __m256i low = _mm256_permute2x128_si256(q0, q1, 0x20);
    const __m256i high = _mm256_permute2x128_si256(q0, q1, 0x31);
    return _mm256_cvtepi32_ps(_mm256_add_epi32(low, high));
  }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec broadcast(float s) { return _mm256_set1_ps(s); }
  static float sum(Vec v) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
  }
  static float half_to_float(std::uint16_t bits) { return _cvtsh_ss(bits); }
};

}  // namespace

void gemv_rows_avx2(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  gemv_rows<Avx2>(args, n_begin, n_end);
}

}  // namespace ferry::kernels::detail
#pragma GCC pop_options

#else  // not x86-64: never selected (detected_isa() is kPortable), defined for the linker.
namespace ferry::kernels::detail {
void gemv_rows_avx2(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  gemv_rows_portable(args, n_begin, n_end);
}
}  // namespace ferry::kernels::detail
#endif
