// The portable variant of the decode product: plain C++ over small fixed-size arrays, which the
// compiler vectorises for the baseline target (SSE2 on x86-64). The fallback everywhere.
#include <c10/util/Half.h>

#include <cstdint>

#include "gemv_block.h"

namespace ferry::kernels::detail {
namespace {

struct Portable {
  static constexpr std::int64_t kWidth = 8;
  struct Vec {
    float v[kWidth];
  };
  static Vec zero() { return Vec{}; }
  static Vec load(const float* p) {
    Vec r;
    for (std::int64_t i = 0; i < kWidth; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(float* p, Vec v) {
    for (std::int64_t i = 0; i < kWidth; ++i) p[i] = v.v[i];
  }
  static Vec from_bf16(const std::uint16_t* p) {
    Vec r;
    for (std::int64_t i = 0; i < kWidth; ++i) r.v[i] = bf16_to_float(p[i]);
    return r;
  }
  static Vec from_f16(const std::uint16_t* p) {
    Vec r;
    for (std::int64_t i = 0; i < kWidth; ++i) r.v[i] = half_to_float(p[i]);
    return r;
  }
  // The AVX2 variant's lanes: lane i sums bytes 4i..4i+3 (Note [int8 activations]).
  static Vec dot_i8(const std::int8_t* w, const std::int8_t* x) {
    Vec r;
    for (std::int64_t i = 0; i < kWidth; ++i) {
      std::int32_t lane = 0;
      for (std::int64_t j = 4 * i; j < 4 * i + 4; ++j) lane += std::int32_t{w[j]} * x[j];
      r.v[i] = static_cast<float>(lane);
    }
    return r;
  }
  static Vec mul(Vec a, Vec b) {
    for (std::int64_t i = 0; i < kWidth; ++i) a.v[i] *= b.v[i];
    return a;
  }
  static Vec fma(Vec a, Vec b, Vec c) {
    for (std::int64_t i = 0; i < kWidth; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static Vec add(Vec a, Vec b) {
    for (std::int64_t i = 0; i < kWidth; ++i) a.v[i] += b.v[i];
    return a;
  }
  static Vec broadcast(float s) {
    Vec r;
    for (auto& e : r.v) e = s;
    return r;
  }
  static float sum(Vec v) {
    float s = 0.0f;
    for (const float e : v.v) s += e;
    return s;
  }
  static float half_to_float(std::uint16_t bits) {
    return c10::detail::fp16_ieee_to_fp32_value(bits);
  }
};

}  // namespace

void gemv_rows_portable(const GemvArgs& args, std::int64_t n_begin, std::int64_t n_end) {
  gemv_rows<Portable>(args, n_begin, n_end);
}

}  // namespace ferry::kernels::detail
