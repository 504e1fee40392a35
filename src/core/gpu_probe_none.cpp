#include "core/gpu_probe.h"

namespace ferry::detail {

// Built against a LibTorch without CUDA: there are no GPUs to probe, which is not an error.
std::vector<GpuMemory> probe_cuda_gpus() { return {}; }

}  // namespace ferry::detail
