#pragma once
// Version/feature shim: GPU memory probing exists only when LibTorch was built with CUDA.
// gpu_probe_cuda.cpp or gpu_probe_none.cpp is compiled, never both. The probe planning uses is
// installed at start-up (Note [GPU probes] in memory.cpp).

#include <atomic>
#include <vector>

#include "ferry/core/memory.h"

namespace ferry::detail {
std::vector<GpuMemory> probe_cuda_gpus();

using GpuProbe = std::vector<GpuMemory> (*)();
// The probe probe_gpus() calls.
std::atomic<GpuProbe>& gpu_probe();
}  // namespace ferry::detail
