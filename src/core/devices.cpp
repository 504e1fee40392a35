#include "ferry/core/devices.h"


#include <ATen/EmptyTensor.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <mutex>
#include <string>

#include "core/gpu_probe.h"
#include "ferry/core/error.h"

namespace ferry {
namespace {


// One simulated GPU. Its allocations share ownership of it, so it outlives the configuration
// (a SimGpuScope) that created it.
struct SimGpu {
  int index = 0;
  std::mutex mutex;
  SimGpuStats stats;
};

struct SimAllocation {
  std::shared_ptr<SimGpu> gpu;
  void* data;
  std::uint64_t bytes;
};

void sim_free(void* context) {
  auto* allocation = static_cast<SimAllocation*>(context);
  {
    std::lock_guard lock(allocation->gpu->mutex);
    allocation->gpu->stats.resident =
        Bytes(allocation->gpu->stats.resident.value() - allocation->bytes);
  }
  std::free(allocation->data);
  delete allocation;
}

// Host memory counted against one simulated GPU's capacity.
class SimAllocator final : public c10::Allocator {
 public:
  explicit SimAllocator(std::shared_ptr<SimGpu> gpu) : gpu_(std::move(gpu)) {}

  c10::DataPtr allocate(std::size_t n) const override {
    {
      std::lock_guard lock(gpu_->mutex);
      SimGpuStats& s = gpu_->stats;
      if (s.resident.value() + n > s.capacity.value()) {
        throw OutOfBudget(
            fmt::format("simulated GPU {} out of memory: tried to allocate {} with {} of {} in use",
                        gpu_->index, format_bytes(n), s.resident.to_string(),
                        s.capacity.to_string()),
            ErrorFields{
                .path = fmt::format("gpu {}", gpu_->index),
                .expected = fmt::format("at most {} free", s.capacity.value() - s.resident.value()),
                .actual = fmt::format("{} requested", n)});
      }
      s.resident = Bytes(s.resident.value() + n);
      if (s.resident > s.peak) s.peak = s.resident;
      ++s.allocations;
    }
    void* data = std::malloc(n == 0 ? 1 : n);
    if (data == nullptr) {
      sim_free(new SimAllocation{gpu_, nullptr, n});
      throw OutOfBudget(fmt::format("host allocation of {} for simulated GPU {} failed",
                                    format_bytes(n), gpu_->index));
    }
    return c10::DataPtr(data, new SimAllocation{gpu_, data, n}, &sim_free, c10::Device(c10::kCPU));
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

 private:
  std::shared_ptr<SimGpu> gpu_;
};

using SimGpus = std::vector<std::shared_ptr<SimGpu>>;

std::mutex g_config_mutex;
std::shared_ptr<SimGpus> g_config;  // null until first use
bool g_config_loaded = false;

std::shared_ptr<SimGpus> make_config(const std::vector<Bytes>& capacities) {
  auto gpus = std::make_shared<SimGpus>();
  for (std::size_t i = 0; i < capacities.size(); ++i) {
    auto gpu = std::make_shared<SimGpu>();
    gpu->index = static_cast<int>(i);
    gpu->stats.capacity = capacities[i];
    gpus->push_back(std::move(gpu));
  }
  return gpus;
}

std::shared_ptr<SimGpus> config() {
  std::lock_guard lock(g_config_mutex);
  if (!g_config_loaded) {
    const char* env = std::getenv("FERRY_SIM_GPUS");
    g_config = make_config(env == nullptr ? std::vector<Bytes>{} : parse_sim_gpus(env));
    g_config_loaded = true;
  }
  return g_config;
}

SimGpu& sim_gpu(int index) {
  auto gpus = config();
  FERRY_CHECK(index >= 0 && static_cast<std::size_t>(index) < gpus->size(), InvalidArgument,
              "no simulated GPU {} ({} configured)", index, gpus->size());
  return *(*gpus)[static_cast<std::size_t>(index)];
}

const SimAllocation* sim_allocation_of(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage() || t.is_meta()) return nullptr;
  const c10::DataPtr& ptr = t.storage().data_ptr();
  if (ptr.get_deleter() != &sim_free) return nullptr;
  return static_cast<const SimAllocation*>(ptr.get_context());
}

}  // namespace

bool gpus_simulated() { return !config()->empty(); }

int simulated_gpu_count() { return static_cast<int>(config()->size()); }

// Note [GPU probes]: the probe that sees CUDA devices and the simulated GPUs' resident bytes.
std::vector<GpuMemory> probe_with_torch() {
  if (!gpus_simulated()) return detail::probe_cuda_gpus();
  std::vector<GpuMemory> gpus;
  for (int i = 0; i < simulated_gpu_count(); ++i) {
    const SimGpuStats s = sim_gpu_stats(i);
    gpus.push_back(
        {.index = i, .free = Bytes(s.capacity.value() - s.resident.value()), .total = s.capacity});
  }
  return gpus;
}

int gpu_count() {
  if (gpus_simulated()) return simulated_gpu_count();
  return at::detail::getCUDAHooks().getNumGPUs();
}

SimGpuStats sim_gpu_stats(int index) {
  SimGpu& gpu = sim_gpu(index);
  std::lock_guard lock(gpu.mutex);
  return gpu.stats;
}

void reset_sim_gpu_peak(int index) {
  SimGpu& gpu = sim_gpu(index);
  std::lock_guard lock(gpu.mutex);
  gpu.stats.peak = gpu.stats.resident;
}

SimGpuScope::SimGpuScope(std::vector<Bytes> capacities) {
  auto next = make_config(capacities);
  std::lock_guard lock(g_config_mutex);
  if (!g_config_loaded) {
    g_config = nullptr;  // the environment's configuration comes back after this scope
  }
  previous_ = g_config_loaded ? std::shared_ptr<void>(g_config) : nullptr;
  g_config = std::move(next);
  g_config_loaded = true;
}

SimGpuScope::~SimGpuScope() {
  std::lock_guard lock(g_config_mutex);
  g_config = std::static_pointer_cast<SimGpus>(previous_);
  g_config_loaded = g_config != nullptr;
}

std::optional<ExecutionDevice> placement_of(const at::Tensor& tensor) {
  if (!tensor.defined() || tensor.is_meta()) return std::nullopt;
  if (const SimAllocation* a = sim_allocation_of(tensor)) return ExecutionDevice::gpu(a->gpu->index);
  if (tensor.is_cuda()) return ExecutionDevice::gpu(tensor.device().index());
  return ExecutionDevice::cpu();
}

at::Tensor move_to(const at::Tensor& tensor, ExecutionDevice device, bool non_blocking) {
  FERRY_CHECK(tensor.defined() && !tensor.is_meta(), InvalidArgument,
              "cannot move a tensor without data (meta or undefined) to {}", device.to_string());
  const std::optional<ExecutionDevice> here = placement_of(tensor);
  if (here == device) return tensor;
  const std::uint64_t bytes = static_cast<std::uint64_t>(tensor.numel()) *
                              static_cast<std::uint64_t>(tensor.element_size());
  if (const SimAllocation* from = sim_allocation_of(tensor)) {
    std::lock_guard lock(from->gpu->mutex);
    from->gpu->stats.bytes_out += bytes;
  }
  if (device.is_cpu()) {
    if (tensor.is_cuda()) return tensor.to(c10::Device(c10::kCPU), non_blocking);
    return tensor.clone(at::MemoryFormat::Contiguous);  // off a simulated GPU: a real copy
  }
  if (!gpus_simulated()) {
    const int n = gpu_count();
    FERRY_CHECK(device.index() < n, InvalidArgument,
                "GPU {} does not exist: {} GPU(s) visible (set FERRY_SIM_GPUS to simulate some)",
                device.index(), n);
    return tensor.to(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device.index())),
                     non_blocking);
  }
  SimGpu& gpu = sim_gpu(device.index());  // checks the index
  const at::Tensor source = tensor.is_cuda() ? tensor.cpu() : tensor;
  SimAllocator allocator((*config())[static_cast<std::size_t>(device.index())]);
  at::Tensor out = at::detail::empty_generic(source.sizes(), &allocator,
                                             c10::DispatchKeySet(c10::DispatchKey::CPU),
                                             source.scalar_type(), at::MemoryFormat::Contiguous);
  out.copy_(source);
  {
    std::lock_guard lock(gpu.mutex);
    gpu.stats.bytes_in += bytes;
  }
  return out;
}

}  // namespace ferry

// Installs probe_with_torch before main; the linker keeps this object in every program that
// links ferry::core, because ferry::core's users link with --undefined=ferry_core_torch_probe.
extern "C" {
extern const bool ferry_core_torch_probe;
const bool ferry_core_torch_probe = [] {
  ferry::detail::gpu_probe().store(&ferry::probe_with_torch);
  return true;
}();
}
