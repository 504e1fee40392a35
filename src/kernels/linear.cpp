#include "ferry/kernels/linear.h"

#include <atomic>
#include <cstdlib>
#include <string_view>

#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "ferry/kernels/isa.h"
#include "product.h"

// Note [float32 weights]
// A float32 weight read by the fused kernel gives the same product as at::linear up to the order
// of the float32 sums (relative differences of ~1e-6), and it is faster at decode sizes
// (bench_kernels, M = 1, 2 threads: 5–10 × at::linear on this machine), where decode spends its
// time. So float32 × float32 takes the kernel too, by default. A caller who needs LibTorch's
// bit-identical product turns it off: set_fused_float32(false), or FERRY_FUSED_FLOAT32=0 in the
// environment (read once). The stored formats that need a conversion anyway (bfloat16, float16,
// int8) always take the kernels.

namespace ferry::kernels {
namespace {

bool fused_float32_from_env() {
  const char* env = std::getenv("FERRY_FUSED_FLOAT32");
  return env == nullptr || std::string_view(env) != "0";
}

std::atomic<bool> g_fused_float32{fused_float32_from_env()};

using detail::WeightFormat;

std::optional<WeightFormat> format_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return WeightFormat::kF32;
    case at::kBFloat16: return WeightFormat::kBF16;
    case at::kHalf: return WeightFormat::kF16;
    default: return std::nullopt;
  }
}

bool needs_autograd(const at::Tensor& x, const at::Tensor& w,
                    const std::optional<at::Tensor>& bias) {
  return at::GradMode::is_enabled() &&
         (x.requires_grad() || w.requires_grad() || (bias && bias->requires_grad()));
}

// LibTorch's own product, the weight converted to the input's dtype: for meta tensors, autograd,
// empty sizes, and devices other than CPU and CUDA.
at::Tensor generic_linear(const at::Tensor& x, const at::Tensor& w,
                          const std::optional<at::Tensor>& bias) {
  const at::Tensor wc = w.to(x.scalar_type());
  if (!bias) return at::linear(x, wc);
  return at::linear(x, wc, bias->to(x.scalar_type()));
}

// CUDA: cuBLAS reads bfloat16 and float16 natively (accumulating in float32), so x — a few rows —
// is converted to the weight's dtype rather than the weight to x's.
at::Tensor cuda_linear(const at::Tensor& x, const at::Tensor& w,
                       const std::optional<at::Tensor>& bias) {
  const at::Tensor xc = x.to(w.scalar_type());
  const at::Tensor y = bias ? at::linear(xc, w, bias->to(w.scalar_type())) : at::linear(xc, w);
  return y.to(x.scalar_type());
}

// Product p's weight fields and rows when the gemv variants can read it as it is; nullopt sends
// the product to linear(), which also reports what is wrong with it.
struct GroupedWeight {
  detail::GemvArgs args;
  std::int64_t n = 0;
};
std::optional<GroupedWeight> grouped_weight(const Product& p, std::int64_t k) {
  const bool grad = at::GradMode::is_enabled();
  if (p.bias && (!p.bias->is_cpu() || (grad && p.bias->requires_grad()))) return std::nullopt;
  if (const auto* w = std::get_if<at::Tensor>(&p.weight)) {
    const std::optional<WeightFormat> format = format_of(w->scalar_type());
    if (!format || (*format == WeightFormat::kF32 && !fused_float32()) || w->dim() != 2 ||
        w->size(1) != k || w->size(0) == 0 || !w->is_cpu() || w->stride(1) != 1 ||
        (grad && w->requires_grad())) {
      return std::nullopt;
    }
    return GroupedWeight{detail::weight_args(*w, *format), w->size(0)};
  }
  const auto& q = std::get<QuantizedWeight>(p.weight);
  if (q.values.dim() != 2 || q.values.scalar_type() != at::kChar || q.values.size(1) != k ||
      q.values.size(0) == 0 || !q.values.is_cpu() || q.values.stride(1) != 1 ||
      !q.scales.is_cpu() || !q.scales.is_contiguous()) {
    return std::nullopt;
  }
  detail::check_quantized(q, p.what);
  return GroupedWeight{detail::weight_args(q), q.out_features()};
}

// Every product in one direct_decode when x and all weights qualify (Note [Grouped products]).
std::optional<std::vector<at::Tensor>> grouped_decode(const at::Tensor& x,
                                                      std::span<const Product> products) {
  if (products.size() < 2 || !x.is_cpu() || x.dim() < 1 || x.numel() == 0 ||
      (at::GradMode::is_enabled() && x.requires_grad())) {
    return std::nullopt;
  }
  const std::int64_t k = x.size(-1);
  std::vector<detail::GemvArgs> args;
  std::vector<std::int64_t> n;
  std::vector<std::optional<at::Tensor>> biases;
  args.reserve(products.size());
  n.reserve(products.size());
  biases.reserve(products.size());
  for (const Product& p : products) {
    std::optional<GroupedWeight> g = grouped_weight(p, k);
    if (!g || (!args.empty() && g->args.format != args.front().format)) return std::nullopt;
    detail::check_bias(p.bias, g->n, p.what);
    args.push_back(g->args);
    n.push_back(g->n);
    biases.push_back(p.bias);
  }
  return detail::direct_decode(x, args, n, active_isa(), biases);
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const Product& p) {
  return std::visit([&](const auto& w) { return linear(x, w, p.bias, p.what); }, p.weight);
}

std::vector<at::Tensor> linear_group(const at::Tensor& x, std::span<const Product> products) {
  if (auto grouped = grouped_decode(x, products)) return std::move(*grouped);
  std::vector<at::Tensor> out;
  out.reserve(products.size());
  for (const Product& p : products) out.push_back(linear(x, p));
  return out;
}

void set_fused_float32(bool on) { g_fused_float32.store(on); }
bool fused_float32() { return g_fused_float32.load(); }

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                  std::string_view what) {
  if (w.scalar_type() == at::kDouble && x.scalar_type() == at::kDouble) {
    return bias ? at::linear(x, w, *bias) : at::linear(x, w);
  }
  FERRY_CHECK(w.dim() == 2, ShapeMismatch, "{}: weight has shape {}, expected [out, in]", what,
              shape_string(w.sizes()));
  const std::optional<WeightFormat> format = format_of(w.scalar_type());
  FERRY_CHECK(format.has_value(), DTypeMismatch,
              "{}: weight dtype {} is not supported: expected float32, bfloat16 or float16", what,
              detail::dtype_name(w.scalar_type()));
  const std::int64_t n = w.size(0);
  const std::int64_t k = w.size(1);
  detail::check_input(x, k, w.sizes(), what);
  detail::check_bias(bias, n, what);

  if (x.is_cuda() || w.is_cuda()) return cuda_linear(x, w, bias);
  const bool float32_by_libtorch =
      w.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat && !fused_float32();
  if (!x.is_cpu() || !w.is_cpu() || (bias && !bias->is_cpu()) || needs_autograd(x, w, bias) ||
      x.numel() == 0 || w.numel() == 0 || float32_by_libtorch) {
    return generic_linear(x, w, bias);
  }
  detail::GemvArgs args;
  if (w.stride(1) == 1) {
    args = detail::weight_args(w, *format);
    if (auto y = detail::direct_decode(x, args, n, active_isa(), bias)) return *y;
  }
  const at::Tensor x_rows = detail::rows_f32(x);
  const std::int64_t m = x_rows.size(0);
  at::Tensor y;
  if (m <= detail::kDecodeMaxRows && w.stride(1) == 1) {
    y = detail::decode_product(x_rows, args, n, active_isa());
  } else if (*format == WeightFormat::kF32) {
    y = at::matmul(x_rows, w.t());
  } else {
    // A transposed weight also lands here: tiles are copied through copy_, whatever the strides.
    y = detail::tiled_product(x_rows, n, [&w](std::int64_t n0, at::Tensor& tile) {
      tile.copy_(w.narrow(0, n0, tile.size(0)));
    });
  }
  return detail::finish(std::move(y), x, bias);
}

}  // namespace ferry::kernels
