// cpu_offload: every weight rests in CPU RAM and is brought to the execution device per module
// call. Two simulated GPUs stand in for real ones (FERRY_SIM_GPUS works the same way).
#include <iostream>

#include "example_model.h"

int main() {
  ferry::SimGpuScope gpus({ferry::Bytes(1 << 20), ferry::Bytes(1 << 20)});
  example::Model model(64, 16, 4);
  const at::Tensor ids = at::randint(64, {1, 8});
  const at::Tensor expected = model(ids);
  ferry::dispatch::cpu_offload(model, {.execution_device = ferry::ExecutionDevice::gpu(0)});
  const bool same = at::equal(model(ids), expected);
  const ferry::SimGpuStats stats = ferry::sim_gpu_stats(0);
  std::cout << "peak on gpu 0: " << stats.peak.to_string() << ", copied in: " << stats.bytes_in
            << " bytes, output equal: " << (same ? "yes" : "NO") << "\n";
  return same ? 0 : 1;
}
