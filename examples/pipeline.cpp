// A pipeline of models chained with cpu_offload_with_hook: each moves to the device when it runs
// and sends the previous one back to the CPU, so only one is on the device at a time.
#include <iostream>

#include "example_model.h"

int main() {
  ferry::SimGpuScope gpus({ferry::Bytes(1 << 20)});
  example::Model encoder(64, 16, 2);
  ferry::nn::Linear decoder(64, 64);
  const at::Tensor ids = at::randint(64, {1, 8});
  const at::Tensor expected = decoder(encoder(ids));
  auto hook_encoder = ferry::dispatch::cpu_offload_with_hook(encoder, ferry::ExecutionDevice::gpu(0));
  auto hook_decoder =
      ferry::dispatch::cpu_offload_with_hook(decoder, ferry::ExecutionDevice::gpu(0), hook_encoder);
  const bool same = at::equal(decoder(encoder(ids)), expected);
  hook_decoder->offload();
  std::cout << "pipeline output equal: " << (same ? "yes" : "NO")
            << ", peak on gpu 0: " << ferry::sim_gpu_stats(0).peak.to_string() << "\n";
  return same ? 0 : 1;
}
