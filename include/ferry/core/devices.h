#pragma once
// The devices weights are placed on and moved between. A GPU placement is a CUDA device, or — when
// simulated GPUs are configured (FERRY_SIM_GPUS, or a SimGpuScope in tests) — a simulated
// accelerator: its tensors live in host memory but are distinct to ferry. Every move to or from
// a simulated GPU is a real copy into memory counted against that GPU's capacity; allocation
// beyond it throws OutOfBudget. Planning, probing and dispatch see simulated GPUs as GPUs.

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "ferry/core/bytes.h"
#include "ferry/core/execution_device.h"
#include "ferry/core/memory.h"
#include "ferry/core/placement.h"

namespace ferry {

// Counters of one simulated GPU.
struct SimGpuStats {
  Bytes capacity;               // allocation beyond this fails
  Bytes resident;               // bytes of live tensors on it now
  Bytes peak;                   // highest `resident` since configuration or reset_sim_gpu_peak
  std::uint64_t bytes_in = 0;   // bytes copied onto it
  std::uint64_t bytes_out = 0;  // bytes copied off it
  std::uint64_t allocations = 0;
};


// Number of GPUs ferry can place weights on: the simulated ones when configured, else CUDA's.
int gpu_count();
// True when GPU placements are simulated.
bool gpus_simulated();
int simulated_gpu_count();
// Throws InvalidArgument for an index that is not a simulated GPU.
SimGpuStats sim_gpu_stats(int index);
void reset_sim_gpu_peak(int index);

// While alive, this thread and all others see exactly these simulated GPUs (replacing
// FERRY_SIM_GPUS); the previous configuration comes back on destruction. Tensors already on a
// simulated GPU stay valid and keep counting against their own GPU. Not meant to overlap
// between threads.
class SimGpuScope {
 public:
  explicit SimGpuScope(std::vector<Bytes> capacities);
  ~SimGpuScope();
  SimGpuScope(const SimGpuScope&) = delete;
  SimGpuScope& operator=(const SimGpuScope&) = delete;

 private:
  std::shared_ptr<void> previous_;
};

// `tensor` on `device`: GPU i (simulated: a counted host copy; else cuda:i), or the CPU (a copy
// when it comes from a simulated GPU). Returns `tensor` itself when it is there already. Throws
// InvalidArgument for a GPU index that does not exist, OutOfBudget when a simulated GPU is full.
at::Tensor move_to(const at::Tensor& tensor, ExecutionDevice device, bool non_blocking = false);

// Where `tensor` lives: a GPU (simulated or CUDA) or the CPU; nullopt for meta (no storage).
std::optional<ExecutionDevice> placement_of(const at::Tensor& tensor);

}  // namespace ferry
