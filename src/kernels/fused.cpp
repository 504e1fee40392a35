#include "ferry/kernels/fused.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ferry/kernels/parallel.h"

namespace ferry::kernels {
namespace {

// Note [Fused layer steps]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// A decode step of a decoder layer ran about 40 LibTorch operators besides its products: the
// RMS norm alone was seven (a cast, pow, mean, add, rsqrt, two multiplies, plus the weight's
// conversion), the rotary embedding seven per tensor (two narrows, a negation, a cat, two casts,
// two multiplies and an add). Each costs a dispatch and an allocation, a few microseconds, and
// they run on the main thread while the other threads wait for the next product: perf put ~7 ms
// of a 37 ms bfloat16 decode token there. These loops do the same arithmetic in one pass. The
// norm's mean is summed in double (LibTorch sums float32 in float32 in another order), so
// results agree to float32 rounding, not bit for bit.

// Rows per task: enough elements that a thread's share is worth waking it for.
std::int64_t grain_rows(std::int64_t row_len) {
  return std::max<std::int64_t>(1, (std::int64_t{1} << 15) / std::max<std::int64_t>(row_len, 1));
}

// Note [Attention rows, cloned per CPU]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A decode step reads every cached key and value once per layer: at 400 tokens of the int8
// reference model that was 12 % of the step, at ~16 GB/s, compute-bound in the baseline target's
// 4-wide vectors. This row loop is compiled three times (GCC target_clones: AVX-512, AVX2+FMA and
// the baseline) and the dynamic loader picks the widest the CPU has, once, at start. The
// arithmetic is the same in each (sixteen running sums per dot product, in the same order); FMA
// contraction in the wider clones changes the last bits only. Sanitizer builds compile the
// baseline alone: no ifunc resolver runs during relocation, before the sanitizer's runtime.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_UNDEFINED__)
#define FERRY_CLONED_ROW __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define FERRY_CLONED_ROW
#endif

struct AttendRow {
  const float* q;     // [d]
  const float* k;     // key s at k + s · k_step
  const float* v;     // value s at v + s · v_step
  const float* mask;  // mask s at mask + s · mask_step
  std::int64_t k_step, v_step, mask_step, keys, d;
  float scale, cap;
  bool capped;  // a soft cap applies
};

// out[0, d) = softmax(cap(q · kᵀ · scale) + mask) · v for one query row; scores has room for
// `keys` floats, out for d.
FERRY_CLONED_ROW void attend_row(const AttendRow& r, float* __restrict scores,
                                 float* __restrict out) {
  const float* __restrict q = r.q;
  const std::int64_t d = r.d;
  float best = -std::numeric_limits<float>::infinity();
  for (std::int64_t s = 0; s < r.keys; ++s) {
    const float* __restrict key = r.k + s * r.k_step;
    float lanes[16] = {};
    std::int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) lanes[j] += q[i + j] * key[i + j];
    }
    float total = 0.0f;
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) total += lanes[j];
    for (; i < d; ++i) total += q[i] * key[i];
    float score = total * r.scale;
    if (r.capped) score = std::tanh(score / r.cap) * r.cap;
    score += r.mask[s * r.mask_step];
    scores[s] = score;
    best = std::max(best, score);
  }
  float sum = 0.0f;
  for (std::int64_t s = 0; s < r.keys; ++s) {
    scores[s] = std::exp(scores[s] - best);
    sum += scores[s];
  }
  for (std::int64_t i = 0; i < d; ++i) out[i] = 0.0f;
  for (std::int64_t s = 0; s < r.keys; ++s) {
    const float weight = scores[s] / sum;
    const float* __restrict value = r.v + s * r.v_step;
    std::int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) out[i + j] += weight * value[i + j];
    }
    for (; i < d; ++i) out[i] += weight * value[i];
  }
}

bool plain_cpu_float(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat &&
         !(at::GradMode::is_enabled() && t.requires_grad());
}

// A 1-d weight's values as float32: its own data when it is contiguous float32, else converted
// into `scratch` here. A LibTorch .to(float32) per call, for a bfloat16 or float16 model's norm
// weights, was 4 of the ~50 LibTorch calls (an allocation among them) of each decoder layer.
template <class T>
void widen(const T* src, std::int64_t stride, std::int64_t n, float* dst) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i * stride]);
}

const float* float_weight(const at::Tensor& w, std::vector<float>& scratch) {
  const std::int64_t n = w.size(0);
  const std::int64_t stride = w.stride(0);
  if (w.scalar_type() == at::kFloat && stride == 1) return w.data_ptr<float>();
  scratch.resize(static_cast<std::size_t>(n));
  switch (w.scalar_type()) {
    case at::kBFloat16: widen(w.data_ptr<c10::BFloat16>(), stride, n, scratch.data()); break;
    case at::kHalf: widen(w.data_ptr<c10::Half>(), stride, n, scratch.data()); break;
    default: widen(w.data_ptr<float>(), stride, n, scratch.data()); break;  // float32, strided
  }
  return scratch.data();
}

}  // namespace

bool rms_norm_applies(const at::Tensor& x, const at::Tensor& weight) {
  if (!plain_cpu_float(x) || x.dim() < 1 || x.size(-1) == 0 || x.stride(-1) != 1 ||
      !weight.defined()) {
    return false;
  }
  if (!weight.device().is_cpu() || weight.dim() != 1 || weight.size(0) != x.size(-1)) return false;
  if (at::GradMode::is_enabled() && weight.requires_grad()) return false;
  const auto t = weight.scalar_type();
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const std::int64_t d = x.size(-1);
  const at::Tensor rows = x.reshape({-1, d});  // a view where the strides allow
  const std::int64_t n = rows.size(0);
  const std::int64_t in_stride = rows.stride(0);
  at::Tensor y = at::empty({n, d}, x.options());
  thread_local std::vector<float> scratch;  // the calling thread's; read by the team below
  const float* wp = float_weight(weight, scratch);
  const float* xp = rows.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  parallel_for(n, grain_rows(d), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* xr = xp + r * in_stride;
      float* yr = yp + r * d;
      double squares = 0.0;
      for (std::int64_t i = 0; i < d; ++i) squares += static_cast<double>(xr[i]) * xr[i];
      // As LibTorch: the mean as float32, then rsqrt(mean + eps) in float32.
      const float mean = static_cast<float>(squares / static_cast<double>(d));
      const float scale = 1.0f / std::sqrt(mean + static_cast<float>(eps));
      for (std::int64_t i = 0; i < d; ++i) yr[i] = wp[i] * (xr[i] * scale);
    }
  });
  return y.view(x.sizes());
}

bool rotate_half_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (!plain_cpu_float(x) || !plain_cpu_float(cos) || !plain_cpu_float(sin)) return false;
  if (x.dim() != 4 || cos.dim() != 3 || sin.sizes() != cos.sizes()) return false;
  const std::int64_t rot = cos.size(2);
  return x.stride(3) == 1 && rot % 2 == 0 && rot > 0 && rot <= x.size(3) &&
         cos.size(0) == x.size(0) && cos.size(1) == x.size(2);
}

at::Tensor rotate_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const std::int64_t b = x.size(0), heads = x.size(1), t = x.size(2), d = x.size(3);
  const std::int64_t half = cos.size(2) / 2;
  const at::Tensor c = cos.contiguous();
  const at::Tensor s = sin.contiguous();
  at::Tensor y = at::empty({b, heads, t, d}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* cp = c.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const std::int64_t xs0 = x.stride(0), xs1 = x.stride(1), xs2 = x.stride(2);
  const std::int64_t n = b * heads * t;
  parallel_for(n, grain_rows(d), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t bi = r / (heads * t);
      const std::int64_t hi = r / t % heads;
      const std::int64_t ti = r % t;
      const float* xr = xp + bi * xs0 + hi * xs1 + ti * xs2;
      const float* cr = cp + (bi * t + ti) * 2 * half;
      const float* sr = sp + (bi * t + ti) * 2 * half;
      float* yr = yp + r * d;
      for (std::int64_t i = 0; i < half; ++i) {
        // Written as LibTorch rounds it: each product rounded, then the sum.
        const float a = xr[i] * cr[i];
        const float bpart = -xr[i + half] * sr[i];
        yr[i] = a + bpart;
        const float c2 = xr[i + half] * cr[i + half];
        const float d2 = xr[i] * sr[i + half];
        yr[i + half] = c2 + d2;
      }
      std::copy(xr + 2 * half, xr + d, yr + 2 * half);
    }
  });
  return y;
}

bool attend_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& mask) {
  for (const at::Tensor* t : {&q, &k, &v, &mask}) {
    if (!plain_cpu_float(*t) || t->dim() != 4 || t->stride(3) != 1) return false;
  }
  const std::int64_t b = q.size(0), heads = q.size(1), tokens = q.size(2), d = q.size(3);
  const std::int64_t kv = k.size(1), keys = k.size(2);
  return kv > 0 && heads % kv == 0 && k.size(0) == b && k.size(3) == d && v.sizes() == k.sizes() &&
         (mask.size(0) == b || mask.size(0) == 1) && mask.size(1) == 1 && mask.size(2) == tokens &&
         mask.size(3) == keys;
}

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask, double scale, std::optional<double> softcap) {
  const std::int64_t b = q.size(0), heads = q.size(1), tokens = q.size(2), d = q.size(3);
  const std::int64_t keys = k.size(2);
  const std::int64_t group = heads / k.size(1);
  at::Tensor out = at::empty({b, tokens, heads * d}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* mp = mask.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float scale_f = static_cast<float>(scale);
  const float cap = softcap ? static_cast<float>(*softcap) : 0.0f;
  const std::int64_t mask_b = mask.size(0) == 1 ? 0 : mask.stride(0);
  // The strides as plain numbers: Tensor::stride(dim) wraps and checks its argument per call,
  // and the loops below ask once per key.
  const std::int64_t q_b = q.stride(0), q_h = q.stride(1), q_t = q.stride(2);
  const std::int64_t k_b = k.stride(0), k_h = k.stride(1), k_s = k.stride(2);
  const std::int64_t v_b = v.stride(0), v_h = v.stride(1), v_s = v.stride(2);
  const std::int64_t mask_t = mask.stride(2), mask_s = mask.stride(3);
  const std::int64_t rows = b * heads * tokens;
  parallel_for(rows, grain_rows(keys * d * 2), [&](std::int64_t r0, std::int64_t r1) {
    std::vector<float> scores(static_cast<std::size_t>(keys));
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t bi = r / (heads * tokens);
      const std::int64_t hi = r / tokens % heads;
      const std::int64_t ti = r % tokens;
      const std::int64_t kv = hi / group;
      const AttendRow row{.q = qp + bi * q_b + hi * q_h + ti * q_t,
                          .k = kp + bi * k_b + kv * k_h,
                          .v = vp + bi * v_b + kv * v_h,
                          .mask = mp + bi * mask_b + ti * mask_t,
                          .k_step = k_s,
                          .v_step = v_s,
                          .mask_step = mask_s,
                          .keys = keys,
                          .d = d,
                          .scale = scale_f,
                          .cap = cap,
                          .capped = softcap.has_value()};
      attend_row(row, scores.data(), op + (bi * tokens + ti) * heads * d + hi * d);
    }
  });
  return out;
}

}  // namespace ferry::kernels
