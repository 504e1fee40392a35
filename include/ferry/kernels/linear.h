#pragma once
// The kernels layer: the fused matrix products the nn layer's Linear computes with. A weight
// stays in the dtype it is stored in (float32, bfloat16, float16); the product is accumulated in
// float32 and returned in the input's dtype. Decode-sized inputs (a few rows) go to a kernel
// chosen at run time for the CPU at hand; prefill-sized ones to BLAS GEMM on converted tiles;
// CUDA tensors to LibTorch's own matmul.

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "ferry/kernels/quantized.h"

namespace ferry::kernels {

// y = x · wᵀ (+ bias): x [..., in] (float32, or the compute dtype), w [out, in] in float32,
// bfloat16 or float16, bias [out] or none. Throws ferry::Error (naming `what`, the caller's
// module path or tensor name) on a shape or dtype mismatch.
// A float64 weight with a float64 input is passed to at::linear unchanged (not a stored format the
// kernels read, but LibTorch's own product of two float64 tensors).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                  std::string_view what = "linear");

// One product of a group: a weight in a stored format (float32, bfloat16, float16) or int8, its
// bias, and the name messages use.
struct Product {
  std::variant<at::Tensor, QuantizedWeight> weight;
  std::optional<at::Tensor> bias;
  std::string_view what = "linear";
};

// linear(x, p.weight, p.bias, p.what) of one product.
at::Tensor linear(const at::Tensor& x, const Product& p);

// linear(x, p) of each product on the same x, in order (q, k and v; gate and up). When x is a few
// contiguous float32 rows on the CPU and every weight is a decodable CPU weight of one format, the
// products run as one threaded pass, x quantized once for int8 (Note [Grouped products] in
// src/kernels/gemv.cpp), each result bit for bit its own linear(); otherwise one linear() each.
// Throws as linear() does, naming the product's `what`.
std::vector<at::Tensor> linear_group(const at::Tensor& x, std::span<const Product> products);

// What the decode kernels' products (the fused passes above, one per product or group) have done
// on the calling thread since it started: passes, bytes of weight read (int8: values and
// scales) and wall seconds, x's quantization included. A decode step's time less these seconds
// is what the rest of the step took (Note [Where a step's time goes] in src/kernels/gemv.cpp).
// Per thread: a step's products run on the thread that calls it (its team works inside them).
// Products that go to BLAS or LibTorch (prefill sizes, CUDA, float64) are not counted.
struct ProductStats {
  std::int64_t calls = 0;
  std::int64_t weight_bytes = 0;
  double seconds = 0;
};
ProductStats product_stats();
// The difference of two snapshots: what was done between them.
ProductStats operator-(const ProductStats& later, const ProductStats& earlier);

// Whether a float32 weight with a float32 input goes to the fused decode kernel (the default:
// faster at decode sizes; sums in another order than BLAS) instead of at::linear (bit-identical
// to LibTorch). Process-wide; FERRY_FUSED_FLOAT32=0 turns it off at start; see Note [float32
// weights] in src/kernels/linear.cpp.
void set_fused_float32(bool on);
bool fused_float32();

}  // namespace ferry::kernels
