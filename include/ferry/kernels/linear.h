#pragma once
// The kernels layer: the fused matrix products the nn layer's Linear computes with. A weight
// stays in the dtype it is stored in (float32, bfloat16, float16); the product is accumulated in
// float32 and returned in the input's dtype. Decode-sized inputs (a few rows) go to a kernel
// chosen at run time for the CPU at hand; prefill-sized ones to BLAS GEMM on converted tiles;
// CUDA tensors to LibTorch's own matmul.

#include <ATen/ATen.h>

#include <optional>

namespace ferry::kernels {

// y = x · wᵀ (+ bias): x [..., in] (float32, or the compute dtype), w [out, in] in float32,
// bfloat16 or float16, bias [out] or none. Throws ferry::Error (naming `what`, the caller's
// module path or tensor name) on a shape or dtype mismatch.
// A float64 weight with a float64 input is passed to at::linear unchanged (not a stored format the
// kernels read, but LibTorch's own product of two float64 tensors).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                  std::string_view what = "linear");

// Whether a float32 weight with a float32 input goes to the fused decode kernel (the default:
// faster at decode sizes; sums in another order than BLAS) instead of at::linear (bit-identical
// to LibTorch). Process-wide; FERRY_FUSED_FLOAT32=0 turns it off at start; see Note [float32
// weights] in src/kernels/linear.cpp.
void set_fused_float32(bool on);
bool fused_float32();

}  // namespace ferry::kernels
