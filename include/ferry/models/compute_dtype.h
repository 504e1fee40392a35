#pragma once
// The compute dtype of a model, as transformers' torch_dtype: what its activations, KV cache and
// layer outputs are in, separate from the dtype its weights are stored in (Note [Compute dtype]
// in src/models/compute_dtype.cpp).

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <string_view>

#include "ferry/core/compute_dtype.h"
#include "ferry/core/dtype.h"
#include "ferry/io/tensor_source.h"
#include "ferry/models/config.h"

namespace ferry::models {

// The model-free rules live in the core layer (LibTorch-free, for the CLI's front end).
using ferry::check_computable;
using ferry::compute_dtype_name;
using ferry::ComputeDType;
using ferry::held_dtype;
using ferry::parse_compute_dtype;

// The dtypes a model is built with.
struct ModelDTypes {
  at::ScalarType weights = at::kFloat;  // parameters and buffers as created (before loading)
  at::ScalarType compute = at::kFloat;  // activations: embeddings convert looked-up rows to it
};

// The dtype most of `source`'s floating tensors are stored in (by bytes; ties: the first in
// safetensors order); nullopt when it has none.
std::optional<DType> stored_floating_dtype(const io::TensorSource& source);

// The dtype a model computes in: `requested`, or for automatic, config.json's torch_dtype (when
// it names a dtype), else the checkpoint's stored floating dtype, else float32. Throws
// InvalidArgument naming config.json when that dtype is not one ferry computes in, or when
// requested names one (a ComputeDType made by hand with int8).
DType resolve_compute_dtype(const ComputeDType& requested, const ModelConfig& config,
                            const io::TensorSource& source);

}  // namespace ferry::models
