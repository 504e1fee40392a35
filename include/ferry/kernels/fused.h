#pragma once
// Fused element-wise steps of a decoder layer (Note [Fused layer steps] in src/kernels/fused.cpp):
// each replaces a chain of LibTorch operators, which at decode sizes (one token, a few thousand
// floats) cost more in dispatch and allocation than in arithmetic. Each has an `_applies` test;
// where it says no (another device or dtype, autograd), the caller keeps its LibTorch chain.

#include <ATen/ATen.h>

#include <optional>

namespace ferry::kernels {

// RMS normalisation over the last dimension, transformers' LlamaRMSNorm for a float32 input:
//   y = weight · (x ÷ sqrt(mean(x²) + eps)),
// weight [D] float32, bfloat16 or float16 (applied as float32). Applies to float32 CPU x whose
// last dimension is contiguous, without autograd.
bool rms_norm_applies(const at::Tensor& x, const at::Tensor& weight);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotary embedding of the first 2·H elements of x's last dimension by the "rotate half" rule
// (the rest unchanged), transformers' apply_rotary_pos_emb:
//   y[i] = x[i] · cos[i] − x[i + H] · sin[i],  y[i + H] = x[i + H] · cos[i + H] + x[i] · sin[i + H]
// for i < H, where x is [B, heads, T, D] (any strides, last one 1) and cos, sin are [B, T, 2H].
// Applies to float32 CPU tensors without autograd.
bool rotate_half_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor rotate_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Scaled dot-product attention, each query row against every key row (the mask decides):
//   softmax(cap(q kᵀ · scale) + mask) v,   cap(s) = softcap · tanh(s ÷ softcap) when given,
// q [B, H, T, D], k and v [B, KV, S, D] (KV divides H: key head h ÷ (H ÷ KV) serves query head
// h), mask [B or 1, 1, T, S] added to the scores. Returns [B, T, H · D]. Threaded over (b, h, t)
// rows once there is enough work. Applies to float32 CPU tensors whose last dimensions are
// contiguous, without autograd.
bool attend_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& mask);
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask, double scale, std::optional<double> softcap);

}  // namespace ferry::kernels
