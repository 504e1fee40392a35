#include "product.h"

#include <vector>

#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/core/shape.h"

namespace ferry::kernels::detail {
namespace {

// Rows of the weight converted to float32 at once by tiled_product: 256 rows of a 8192-wide
// weight are 8 MiB of scratch, large enough for BLAS to run at full speed on the tile.
constexpr std::int64_t kTileRows = 256;

bool is_compute_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

}  // namespace

std::string dtype_name(at::ScalarType t) {
  const ElementType e = ElementType::of(t);
  return e.dtype() ? std::string(torch_name(*e.dtype())) : e.name();
}

void check_input(const at::Tensor& x, std::int64_t k, at::IntArrayRef weight_shape,
                 std::string_view what) {
  FERRY_CHECK(x.dim() >= 1 && x.size(-1) == k, ShapeMismatch,
              "{}: input has shape {}, expected [..., {}] for weight {}", what,
              shape_string(x.sizes()), k, shape_string(weight_shape));
  FERRY_CHECK(is_compute_dtype(x.scalar_type()), DTypeMismatch,
              "{}: input dtype {} is not supported: expected float32, bfloat16 or float16", what,
              dtype_name(x.scalar_type()));
}

void check_bias(const std::optional<at::Tensor>& bias, std::int64_t n, std::string_view what) {
  if (!bias) return;
  FERRY_CHECK(bias->dim() == 1 && bias->size(0) == n, ShapeMismatch,
              "{}: bias has shape {}, expected [{}]", what, shape_string(bias->sizes()), n);
  FERRY_CHECK(is_compute_dtype(bias->scalar_type()), DTypeMismatch,
              "{}: bias dtype {} is not supported: expected float32, bfloat16 or float16", what,
              dtype_name(bias->scalar_type()));
}

void check_quantized(const QuantizedWeight& w, std::string_view what) {
  FERRY_CHECK(w.values.dim() == 2 && w.values.scalar_type() == at::kChar, DTypeMismatch,
              "{}: int8 weight values have dtype {} and shape {}, expected int8 [out, in]", what,
              dtype_name(w.values.scalar_type()), shape_string(w.values.sizes()));
  const std::int64_t groups =
      w.scheme == QuantScheme::kPerChannel ? 1 : (w.in_features() + kInt8Group - 1) / kInt8Group;
  FERRY_CHECK(
      w.scales.dim() == 2 && w.scales.size(0) == w.out_features() && w.scales.size(1) == groups &&
          (w.scales.scalar_type() == at::kHalf || w.scales.scalar_type() == at::kFloat),
      ShapeMismatch,
      "{}: int8 weight scales have shape {} ({}), expected float16 or float32 [{}, {}]", what,
      shape_string(w.scales.sizes()), dtype_name(w.scales.scalar_type()), w.out_features(), groups);
}

at::Tensor rows_f32(const at::Tensor& x) {
  return x.reshape({-1, x.size(-1)}).to(at::kFloat).contiguous();
}

at::Tensor decode_product(const at::Tensor& x_rows, GemvArgs args, std::int64_t n, Isa isa) {
  const std::int64_t m = x_rows.size(0);
  const std::int64_t k = x_rows.size(1);
  // The variants read x in whole vectors: rows padded with zeros to a multiple of kPadFloats.
  const std::int64_t x_stride = (k + kPadFloats - 1) / kPadFloats * kPadFloats;
  at::Tensor padded = x_rows;
  if (x_stride != k) {
    padded = at::zeros({m, x_stride}, x_rows.options());
    padded.narrow(1, 0, k).copy_(x_rows);
  }
  at::Tensor y = at::empty({m, n}, x_rows.options());
  args.x = padded.data_ptr<float>();
  args.m_rows = m;
  args.x_stride = x_stride;
  args.k = k;
  args.y = y.data_ptr<float>();
  args.y_stride = n;
  gemv(args, n, isa);
  return y;
}

std::optional<at::Tensor> direct_decode(const at::Tensor& x, GemvArgs args, std::int64_t n, Isa isa,
                                        const std::optional<at::Tensor>& bias) {
  std::optional<std::vector<at::Tensor>> y =
      direct_decode(x, std::span<GemvArgs>(&args, 1), std::span<const std::int64_t>(&n, 1), isa,
                    std::span(&bias, 1));
  if (!y) return std::nullopt;
  return std::move(y->front());
}

std::optional<std::vector<at::Tensor>> direct_decode(
    const at::Tensor& x, std::span<GemvArgs> args, std::span<const std::int64_t> n, Isa isa,
    std::span<const std::optional<at::Tensor>> biases) {
  if (x.scalar_type() != at::kFloat || !x.is_contiguous()) return std::nullopt;
  const std::int64_t k = x.size(-1);
  if (k == 0 || k % kPadFloats != 0) return std::nullopt;
  const std::int64_t m = x.numel() / k;
  if (m > kDecodeMaxRows) return std::nullopt;
  std::vector<std::int64_t> shape(x.sizes().begin(), x.sizes().end());
  std::vector<at::Tensor> y;
  y.reserve(args.size());
  for (std::size_t i = 0; i < args.size(); ++i) {
    shape.back() = n[i];
    y.push_back(at::empty(shape, x.options()));
    args[i].x = x.data_ptr<float>();
    args[i].m_rows = m;
    args[i].x_stride = k;
    args[i].k = k;
    args[i].y = y.back().data_ptr<float>();
    args[i].y_stride = n[i];
  }
  gemv_group(args, n, isa);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::optional<at::Tensor>& bias = biases[i];
    if (bias) y[i].add_(bias->scalar_type() == at::kFloat ? *bias : bias->to(at::kFloat));
  }
  return y;
}

GemvArgs weight_args(const at::Tensor& w, WeightFormat format) {
  GemvArgs args;
  args.w = w.data_ptr();
  args.format = format;
  args.w_stride = w.stride(0);
  return args;
}

GemvArgs weight_args(const QuantizedWeight& w) {
  GemvArgs args;
  args.w = w.values.data_ptr();
  args.format = WeightFormat::kI8;
  args.w_stride = w.values.stride(0);
  args.scales = w.scales.data_ptr();
  args.half_scales = w.scales.scalar_type() == at::kHalf;
  args.group = w.group_size();
  args.n_groups = w.scales.size(1);
  return args;
}

at::Tensor tiled_product(const at::Tensor& x_rows, std::int64_t n, const FillTile& fill) {
  const std::int64_t k = x_rows.size(1);
  // yᵀ [n, m]: each tile's product is a contiguous block of its rows.
  at::Tensor y_t = at::empty({n, x_rows.size(0)}, x_rows.options());
  at::Tensor scratch = at::empty({std::min(kTileRows, n), k}, x_rows.options());
  const at::Tensor x_t = x_rows.t();
  for (std::int64_t n0 = 0; n0 < n; n0 += kTileRows) {
    const std::int64_t rows = std::min(kTileRows, n - n0);
    at::Tensor tile = scratch.narrow(0, 0, rows);
    fill(n0, tile);
    at::Tensor out = y_t.narrow(0, n0, rows);
    at::mm_out(out, tile, x_t);
  }
  return y_t.t();
}

at::Tensor finish(at::Tensor y, const at::Tensor& x, const std::optional<at::Tensor>& bias) {
  if (bias) y.add_(bias->to(at::kFloat));
  std::vector<std::int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = y.size(1);
  return y.reshape(shape).to(x.scalar_type());
}

}  // namespace ferry::kernels::detail
