#include "ferry/kernels/quantized.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "ferry/kernels/isa.h"
#include "ferry/kernels/parallel.h"
#include "int8_group.h"
#include "product.h"

// Note [int8 group size]
// Both schemes are symmetric int8 with a scale = max |w| ÷ 127 over the group, so each element is
// off by at most half a step of its group. Measured with bench_kernels (4096 inputs,
// x ~ N(0, 1) [4, 4096], error of y vs the float32 product, ÷ mean |y|; decode rows, so the
// activation is quantized too, Note [int8 activations]; weight-only figures in brackets):
//   weights N(0, 0.02):
//     group 32     max 0.038 mean 0.0077   [max 0.025 mean 0.0055]
//     per channel  max 0.051 mean 0.0104   [max 0.043 mean 0.0090]
//   Student t(4) + every 512th column × 20:
//     group 32     max 0.054 mean 0.0098   [max 0.059 mean 0.0084]
//     per channel  max 0.97  mean 0.058    [max 0.97  mean 0.058]
// One outlier sets the step of its whole row under per-channel scales and flattens every other
// weight of the row to a few levels; a group of 32 confines it to 32 weights. Large models'
// projections have such outlier columns, so group 32 is the default we recommend. It costs 2 bytes
// of scale per 32 weights (1.0625 bytes per weight instead of ~1.0, Note [int8 scales in
// float16]) and one multiply per group and row in the kernel; at batch 1 on the 2-core AVX2
// machine both ran at 0.95–1.2 × memcpy bandwidth (noisy, load ≈ 5), per channel not measurably
// faster. Per channel remains for weights known to be outlier-free, where its smaller size wins.
// (The figures above were measured with float32 scales; with float16 ones the same run gave
// group 32 max 0.039 mean 0.0078, and 0.052 / 0.0097 with outliers: the same within its noise.)

// Note [int8 scales in float16]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Scales are stored in float16 by default, as llama.cpp's Q8_0 stores them: 2 bytes per 32
// weights instead of 4, so an int8 weight is 1.0625 bytes per element instead of 1.125 (5.6 %
// fewer bytes in RAM, in the offload folder and streamed from disk). Each scale is the smallest
// float16 at least max |w| ÷ 127 (half_at_least: rounded up, never to zero), and the values are
// rounded against that stored scale, not the float32 one: every element stays within half a
// step of the scale the kernel multiplies by, and none is clamped. Float16's 11-bit significand
// makes that step at most 2^-10 coarser than the float32 one; below float16's normal range
// (groups with max |w| < ~8e-3) the step is at most 2^-24 coarser, absolutely. A group with
// max |w| above 127 × 65504 (~8.3e6) has no float16 scale: quantize() then throws InvalidArgument
// naming the row and suggesting float32 scales (scale_dtype = float32), which the kernels read
// too, as they read the float32 scales ferry wrote before (an int8 model or offload folder
// keeps its scales' dtype; Note [int8 Linear weights]). The VNNI variant widens a chunk's
// sixteen scales with one vcvtph2ps, the AVX2 one eight at a time (F16C), the portable one in
// C++; the widening is exact, so a product with float16 scales equals the product with the same
// scales widened to float32 bit for bit (tested on every instruction set).
//
// Measured (bench_kernels --formats int8-g32,int8-g32-f32 --interleave, 2 threads, AVX-512
// VNNI): per call, the float16 scales took 1–1.5 % less time at 4096x4096 and 11008x4096 and
// were within the ±5 % noise at the reference model's 1024x1024, 2816x1024 and 1024x2816; the
// product here is not bound by its bytes alone, so the 5.6 % fewer bytes did not show in full.
// Decode of the reference model in RAM was within this VM's noise (two alternated 10-run A/Bs
// gave 0.93 × and 1.14 × the float32 scales' time per token).

namespace ferry::kernels {
namespace {

constexpr std::int64_t kGroup = detail::kInt8Group;

constexpr float kHalfMax = 65504.0f;  // the largest finite float16

// The smallest float16 ≥ scale, as its bits, for 0 < scale ≤ kHalfMax (Note [int8 scales in
// float16]): rounded up, so that |w| ÷ the stored scale never exceeds 127.
std::uint16_t half_at_least(float scale) {
  std::uint16_t bits = c10::Half(scale).x;  // to nearest
  // A positive float16's next value up is its bits plus one (through the subnormals too).
  if (c10::detail::fp16_ieee_to_fp32_value(bits) < scale) ++bits;
  return bits;
}

// Scales for every column of rows [n0, n0 + rows): [rows, k] float32 (tile-sized).
at::Tensor expanded_scales(const QuantizedWeight& w, std::int64_t n0, std::int64_t rows) {
  const at::Tensor s = w.scales.narrow(0, n0, rows).to(at::kFloat);
  if (w.scheme == QuantScheme::kPerChannel) return s.expand({rows, w.in_features()});
  return s.repeat_interleave(kGroup, 1).narrow(1, 0, w.in_features());
}

}  // namespace

std::int64_t QuantizedWeight::group_size() const {
  return scheme == QuantScheme::kPerChannel ? in_features() : kGroup;
}

at::Tensor QuantizedWeight::dequantize() const {
  return values.to(at::kFloat) * expanded_scales(*this, 0, out_features());
}

QuantizedWeight quantize(const at::Tensor& w, QuantScheme scheme, at::ScalarType scale_dtype) {
  FERRY_CHECK(w.dim() == 2, ShapeMismatch, "quantize: weight has shape {}, expected [out, in]",
              shape_string(w.sizes()));
  FERRY_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16 ||
                  w.scalar_type() == at::kHalf,
              DTypeMismatch,
              "quantize: weight dtype {} is not supported: expected float32, bfloat16 or float16",
              detail::dtype_name(w.scalar_type()));
  FERRY_CHECK(scale_dtype == at::kHalf || scale_dtype == at::kFloat, DTypeMismatch,
              "quantize: scale dtype {} is not supported: expected float16 or float32",
              detail::dtype_name(scale_dtype));
  const std::int64_t n = w.size(0);
  const std::int64_t k = w.size(1);
  // One pass over the weight, rows in parallel: group maxima, scales, rounded values (ATen's
  // chain of whole-tensor ops made five passes and spent most of a load in OpenMP barriers), by
  // the rule the int8 product also quantizes activations with (Note [int8 activations]).
  const at::Tensor wf = w.to(at::kFloat).contiguous();  // no copy for float32
  const std::int64_t group =
      scheme == QuantScheme::kPerChannel ? std::max<std::int64_t>(k, 1) : kGroup;
  const std::int64_t groups = scheme == QuantScheme::kPerChannel ? 1 : (k + kGroup - 1) / kGroup;
  const bool half = scale_dtype == at::kHalf;
  at::Tensor values = at::empty({n, k}, at::kChar);
  at::Tensor scales = at::empty({n, groups}, scale_dtype);
  const float* src = wf.data_ptr<float>();
  std::int8_t* dst = values.data_ptr<std::int8_t>();
  float* scale_f32 = half ? nullptr : scales.data_ptr<float>();
  c10::Half* scale_f16 = half ? scales.data_ptr<c10::Half>() : nullptr;
  const Isa isa = active_isa();  // the same values on any (Note [int8 groups by AVX-512])
  std::atomic<std::int64_t> too_large{-1};  // a group whose scale float16 cannot hold
  kernels::parallel_for(n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::int64_t g = 0; g < groups; ++g) {
        const std::int64_t c0 = g * group;
        const std::int64_t len = std::min(k, c0 + group) - c0;
        const std::int64_t at = r * groups + g;
        if (!half) {
          scale_f32[at] = detail::quantize_int8_group(src + r * k + c0, len, dst + r * k + c0, isa);
          continue;
        }
        const float scale = detail::int8_group_scale(src + r * k + c0, len);
        std::uint16_t bits = c10::Half(scale).x;  // zero and NaN as they are
        if (scale > kHalfMax) {
          too_large.store(at, std::memory_order_relaxed);
        } else if (scale > 0.0f) {
          bits = half_at_least(scale);
        }
        scale_f16[at].x = bits;
        detail::round_int8_group(src + r * k + c0, len, c10::detail::fp16_ieee_to_fp32_value(bits),
                                 dst + r * k + c0);
      }
    }
  });
  if (const std::int64_t at = too_large.load(); at >= 0) {
    const std::int64_t r = at / groups;
    const std::int64_t c0 = (at % groups) * group;
    const std::int64_t len = std::min(k, c0 + group) - c0;
    const float amax = detail::int8_group_scale(src + r * k + c0, len) * 127.0f;
    throw InvalidArgument(
        fmt::format("quantize: row {} inputs [{}, {}) hold |w| = {:g}, beyond the {:g} that int8 "
                    "with float16 scales can hold (127 × {:g}); quantize with float32 scales",
                    r, c0, c0 + len, amax, 127.0f * kHalfMax, kHalfMax),
        ErrorFields{.expected = fmt::format("|w| <= {:g}", 127.0f * kHalfMax),
                    .actual = fmt::format("{:g}", amax)});
  }
  return QuantizedWeight{.values = values, .scales = scales, .scheme = scheme};
}

at::Tensor linear(const at::Tensor& x, const QuantizedWeight& w,
                  const std::optional<at::Tensor>& bias, std::string_view what) {
  detail::check_quantized(w, what);
  const std::int64_t n = w.out_features();
  const std::int64_t k = w.in_features();
  detail::check_input(x, k, w.values.sizes(), what);
  detail::check_bias(bias, n, what);
  if (!x.is_cpu() || !w.values.is_cpu() || x.numel() == 0 || w.values.numel() == 0) {
    const at::Tensor wf = w.dequantize().to(x.device(), x.scalar_type());
    return bias ? at::linear(x, wf, bias->to(x.scalar_type())) : at::linear(x, wf);
  }
  const bool decodable = w.values.stride(1) == 1 && w.scales.is_contiguous();
  detail::GemvArgs args;
  if (decodable) {
    args = detail::weight_args(w);
    if (auto y = detail::direct_decode(x, args, n, active_isa(), bias)) return *y;
  }
  const at::Tensor x_rows = detail::rows_f32(x);
  at::Tensor y;
  if (x_rows.size(0) <= detail::kDecodeMaxRows && decodable) {
    y = detail::decode_product(x_rows, args, n, active_isa());
  } else {
    y = detail::tiled_product(x_rows, n, [&w](std::int64_t n0, at::Tensor& tile) {
      const std::int64_t rows = tile.size(0);
      tile.copy_(w.values.narrow(0, n0, rows));
      tile.mul_(expanded_scales(w, n0, rows));
    });
  }
  return detail::finish(std::move(y), x, bias);
}

}  // namespace ferry::kernels
