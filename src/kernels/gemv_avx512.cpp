// The AVX-512 F variant of the decode product. Only this file's own functions are
// compiled for those instructions (the pragma below comes after every include), so the binary
// still runs on any x86-64; gemv() calls it only when the CPU has them.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gemv.h"

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
    odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
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
void gemv_rows_avx512(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  gemv_rows_portable(args, n_begin, n_end);
}
}  // namespace ferry::kernels::detail
#endif
