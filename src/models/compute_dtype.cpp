#include "ferry/models/compute_dtype.h"

#include <map>

#include "ferry/core/error.h"

namespace ferry::models {

// Note [Compute dtype]
// `--dtype`, LoadModelOptions::compute_dtype and PretrainedOptions::dtype name the compute dtype,
// as transformers' torch_dtype does: the dtype of the activations, the KV cache and every layer's
// output. It is float32 by default whatever the checkpoint stores (transformers' default);
// "auto" is the checkpoint's dtype (config.json's torch_dtype, else the stored dtype of most of
// its floating tensors); float16 and bfloat16 are accepted; nothing else is (parse_compute_dtype
// rejects int8, float64 and unknown names before any weight is read). float16 needs a CUDA GPU:
// LibTorch 1.13 has no float16 CPU kernels, so check_computable refuses it before loading when
// any layer could run on the CPU.
//
// Weights are not converted to the compute dtype. The model is built on meta in the checkpoint's
// dtype, then each floating tensor is given its held dtype (held_dtype): the dtype it is stored
// in, unless the compute dtype is narrower. So
//   - a bf16 or f16 checkpoint computed in float32 (the default) holds bf16/f16 weights in RAM,
//     on the GPU and in the offload folder: CPU tensors are views of the mapped file (no copy,
//     no conversion) and no whole-model float32 copy ever exists. Each layer converts what it
//     reads as it computes: nn::Linear through kernels::linear (a stored-dtype weight with an
//     input in the compute dtype), Conv1D, the norms and the embeddings' looked-up rows by
//     converting per call;
//   - a float32 checkpoint computed in bfloat16 or float16 is converted to it at load, one tensor
//     at a time (CPU weights become converted copies, disk weights are written converted to the
//     offload folder): it halves the memory, as transformers does when it loads with torch_dtype;
//   - a checkpoint already in the compute dtype is read as it is: mapped, zero-copy.
// Because the meta model carries the held dtypes, everything sized from it (module sizes, the
// budgets, `ferry plan`) counts the bytes that will be held: plan equals run. The compute dtype
// itself sizes the KV cache and activation reserves (runtime_needs).
//
// dispatch::LoadAndDispatchOptions::dtype stays the low-level storage choice it is in Accelerate
// ("convert every floating tensor to this"); when a caller sets it in LoadModelOptions the model
// is built in it and no held dtype is derived (the caller chose the storage).

std::optional<DType> stored_floating_dtype(const io::TensorSource& source) {
  std::map<DType, std::uint64_t> bytes;
  for (const std::string& name : source.names()) {
    const TensorInfo info = source.info(name);
    if (is_floating(info.dtype)) bytes[info.dtype] += info.size_bytes();
  }
  std::optional<DType> most;
  for (const DType d : all_dtypes()) {
    const auto it = bytes.find(d);
    if (it != bytes.end() && (!most || it->second > bytes[*most])) most = d;
  }
  return most;
}

DType resolve_compute_dtype(const ComputeDType& requested, const ModelConfig& config,
                            const io::TensorSource& source) {
  if (!requested.automatic) {
    FERRY_CHECK(is_compute_dtype(requested.dtype), InvalidArgument,
                "compute dtype {} is not one ferry runs in: expected one of {}",
                torch_name(requested.dtype), kComputeDTypeNames);
    return requested.dtype;
  }
  // config.json's torch_dtype "auto" (or none) says nothing: the stored dtype decides.
  if (!config.torch_dtype.empty() && config.torch_dtype != "auto") {
    DType d = DType::kF32;
    try {
      d = parse_dtype(config.torch_dtype);
    } catch (const Error& e) {
      throw InvalidArgument(
          fmt::format("{}: field 'torch_dtype' {}", config.file.string(), e.what()),
          ErrorFields{.path = "torch_dtype", .file = config.file.string(),
                      .actual = config.torch_dtype});
    }
    if (!is_compute_dtype(d)) {
      throw InvalidArgument(
          fmt::format("{}: field 'torch_dtype' is {}, which --dtype auto would compute in; ferry "
                      "computes in {} (choose one with --dtype)",
                      config.file.string(), config.torch_dtype, kComputeDTypeNames.substr(6)),
          ErrorFields{.path = "torch_dtype",
                      .file = config.file.string(),
                      .expected = std::string(kComputeDTypeNames.substr(6)),
                      .actual = config.torch_dtype});
    }
    return d;
  }
  const std::optional<DType> stored = stored_floating_dtype(source);
  if (!stored) return DType::kF32;
  FERRY_CHECK(is_compute_dtype(*stored), InvalidArgument,
              "{} stores its floating tensors in {}, which --dtype auto would compute in; ferry "
              "computes in {} (choose one with --dtype)",
              source.description(), torch_name(*stored), kComputeDTypeNames.substr(6));
  return *stored;
}

}  // namespace ferry::models
