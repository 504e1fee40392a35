#include "ferry/kernels/quantized.h"

#include <algorithm>
#include <cmath>

#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "ferry/kernels/isa.h"
#include "ferry/kernels/parallel.h"
#include "int8_group.h"
#include "product.h"

// Note [int8 group size]
// Both schemes are symmetric int8 with a float32 scale = max |w| ÷ 127 over the group, so each
// element is off by at most half a step of its group. Measured with bench_kernels (4096 inputs,
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
// projections have such outlier columns, so group 32 is the default we recommend. It costs 4 bytes
// of scale per 32 weights (1.125 bytes per weight instead of ~1.0, +12.5 % to read) and one
// multiply per group and row in the kernel; at batch 1 on the 2-core AVX2 machine both ran at
// 0.95–1.2 × memcpy bandwidth (noisy, load ≈ 5), per channel not measurably faster. Per channel
// remains for weights known to be outlier-free, where its smaller size wins.

namespace ferry::kernels {
namespace {

constexpr std::int64_t kGroup = detail::kInt8Group;

// Scales for every column of rows [n0, n0 + rows): [rows, k] float32 (tile-sized).
at::Tensor expanded_scales(const QuantizedWeight& w, std::int64_t n0, std::int64_t rows) {
  const at::Tensor s = w.scales.narrow(0, n0, rows);
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

QuantizedWeight quantize(const at::Tensor& w, QuantScheme scheme) {
  FERRY_CHECK(w.dim() == 2, ShapeMismatch, "quantize: weight has shape {}, expected [out, in]",
              shape_string(w.sizes()));
  FERRY_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16 ||
                  w.scalar_type() == at::kHalf,
              DTypeMismatch,
              "quantize: weight dtype {} is not supported: expected float32, bfloat16 or float16",
              detail::dtype_name(w.scalar_type()));
  const std::int64_t n = w.size(0);
  const std::int64_t k = w.size(1);
  // One pass over the weight, rows in parallel: group maxima, scales, rounded values (ATen's
  // chain of whole-tensor ops made five passes and spent most of a load in OpenMP barriers), by
  // the rule the int8 product also quantizes activations with (Note [int8 activations]).
  const at::Tensor wf = w.to(at::kFloat).contiguous();  // no copy for float32
  const std::int64_t group =
      scheme == QuantScheme::kPerChannel ? std::max<std::int64_t>(k, 1) : kGroup;
  const std::int64_t groups = scheme == QuantScheme::kPerChannel ? 1 : (k + kGroup - 1) / kGroup;
  at::Tensor values = at::empty({n, k}, at::kChar);
  at::Tensor scales = at::empty({n, groups}, at::kFloat);
  const float* src = wf.data_ptr<float>();
  std::int8_t* dst = values.data_ptr<std::int8_t>();
  float* scale = scales.data_ptr<float>();
  const Isa isa = active_isa();  // the same values on any (Note [int8 groups by AVX-512])
  kernels::parallel_for(n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::int64_t g = 0; g < groups; ++g) {
        const std::int64_t c0 = g * group;
        const std::int64_t c1 = std::min(k, c0 + group);
        scale[r * groups + g] =
            detail::quantize_int8_group(src + r * k + c0, c1 - c0, dst + r * k + c0, isa);
      }
    }
  });
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
