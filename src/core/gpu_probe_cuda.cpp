#include <c10/cuda/CUDAGuard.h>

#include <cuda_runtime_api.h>

#include "core/gpu_probe.h"

namespace ferry::detail {

std::vector<GpuMemory> probe_cuda_gpus() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: report zero GPUs
    return {};
  }
  std::vector<GpuMemory> gpus;
  for (int i = 0; i < count; ++i) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(i));
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    gpus.push_back({.index = i, .free = Bytes(free_bytes), .total = Bytes(total_bytes)});
  }
  return gpus;
}

}  // namespace ferry::detail
