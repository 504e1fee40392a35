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

}  // namespace

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
    args.w = w.data_ptr();
    args.format = *format;
    args.w_stride = w.stride(0);
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
