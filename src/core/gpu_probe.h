#pragma once
// Version/feature shim: GPU memory probing exists only when LibTorch was built with CUDA.
// gpu_probe_cuda.cpp or gpu_probe_none.cpp is compiled, never both.

#include <vector>

#include "ferry/core/memory.h"

namespace ferry::detail {
std::vector<GpuMemory> probe_cuda_gpus();
}
