#pragma once
// The compute dtype of a model, as transformers' torch_dtype: what its activations, KV cache and
// layer outputs are in, separate from the dtype its weights are stored in (Note [Compute dtype]
// in src/models/compute_dtype.cpp).

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <string_view>

#include "ferry/core/dtype.h"
#include "ferry/io/tensor_source.h"
#include "ferry/models/config.h"

namespace ferry::models {

// The compute dtype a caller asks for. The default is float32 whatever the checkpoint stores
// (transformers' default); `automatic` is torch_dtype="auto": the checkpoint's own dtype.
struct ComputeDType {
  bool automatic = false;      // the checkpoint's dtype (config.json's torch_dtype, else stored)
  DType dtype = DType::kF32;   // when not automatic: float32, bfloat16 or float16
};

// The dtypes a model is built with.
struct ModelDTypes {
  at::ScalarType weights = at::kFloat;  // parameters and buffers as created (before loading)
  at::ScalarType compute = at::kFloat;  // activations: embeddings convert looked-up rows to it
};

// "auto", or a name of float32, bfloat16 or float16 (parse_dtype's spellings: "bf16", "F16",
// "half", "torch.float32", ...). Throws InvalidArgument naming the text and the accepted values
// for anything else (int8, float64, garbage).
ComputeDType parse_compute_dtype(std::string_view text);

// "auto", "float32", "bfloat16" or "float16".
std::string compute_dtype_name(const ComputeDType& dtype);

// The dtype most of `source`'s floating tensors are stored in (by bytes; ties: the first in
// safetensors order); nullopt when it has none.
std::optional<DType> stored_floating_dtype(const io::TensorSource& source);

// The dtype a model computes in: `requested`, or for automatic, config.json's torch_dtype (when
// it names a dtype), else the checkpoint's stored floating dtype, else float32. Throws
// InvalidArgument naming config.json when that dtype is not one ferry computes in, or when
// requested names one (a ComputeDType made by hand with int8).
DType resolve_compute_dtype(const ComputeDType& requested, const ModelConfig& config,
                            const io::TensorSource& source);

// Throws Unsupported (naming the dtype and the alternatives) when `compute` cannot run where the
// model would run: LibTorch 1.13 has no float16 CPU kernels (addmm, bmm, silu, layer_norm,
// softmax), so float16 needs every layer on a CUDA GPU (`on_cuda_only`).
void check_computable(DType compute, bool on_cuda_only);

// The dtype a floating weight stored in `stored` is held in when the model computes in
// `compute`: `stored`, unless `compute` is narrower (fewer bits), then `compute` (the weight is
// converted once, at load).
DType held_dtype(DType stored, DType compute);

}  // namespace ferry::models
