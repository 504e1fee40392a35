#pragma once
// The dtypes ferry computes in, and the rules that need no model: parsing a compute dtype,
// whether it can run where the model runs, and the dtype a stored weight is held in (Note
// [Compute dtype] in src/models/compute_dtype.cpp). LibTorch-free: the CLI's front end checks
// --dtype and plans headers with it.

#include <string>
#include <string_view>

#include "ferry/core/dtype.h"

namespace ferry {

// The compute dtype a caller asks for. The default is float32 whatever the checkpoint stores
// (transformers' default); `automatic` is torch_dtype="auto": the checkpoint's own dtype.
struct ComputeDType {
  bool automatic = false;     // the checkpoint's dtype (config.json's torch_dtype, else stored)
  DType dtype = DType::kF32;  // when not automatic: float32, bfloat16 or float16
};

// What --dtype accepts, for messages.
inline constexpr std::string_view kComputeDTypeNames = "auto, float32, bfloat16, float16";

// float32, bfloat16 or float16.
bool is_compute_dtype(DType d);

// "auto", or a name of float32, bfloat16 or float16 (parse_dtype's spellings: "bf16", "F16",
// "half", "torch.float32", ...). Throws InvalidArgument naming the text and the accepted values
// for anything else (int8, float64, garbage).
ComputeDType parse_compute_dtype(std::string_view text);

// "auto", "float32", "bfloat16" or "float16".
std::string compute_dtype_name(const ComputeDType& dtype);

// Throws Unsupported (naming the dtype and the alternatives) when `compute` cannot run where the
// model would run: LibTorch 1.13 has no float16 CPU kernels (addmm, bmm, silu, layer_norm,
// softmax), so float16 needs every layer on a CUDA GPU (`on_cuda_only`).
void check_computable(DType compute, bool on_cuda_only);

// The dtype a floating weight stored in `stored` is held in when the model computes in
// `compute`: `stored`, unless `compute` is narrower (fewer bits), then `compute` (the weight is
// converted once, at load).
DType held_dtype(DType stored, DType compute);

}  // namespace ferry
