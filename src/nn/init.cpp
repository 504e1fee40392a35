#include "ferry/nn/init.h"

#include <ATen/ATen.h>

#include "ferry/core/env.h"

namespace ferry::nn {
namespace {
thread_local InitContext t_context;
}  // namespace

const InitContext& current_init_context() noexcept { return t_context; }

bool resolve_include_buffers(std::optional<bool> include_buffers) {
  if (include_buffers) return *include_buffers;
  return env_flag("FERRY_INIT_INCLUDE_BUFFERS").value_or(false);
}

InitOnDevice::InitOnDevice(c10::Device device, std::optional<bool> include_buffers)
    : previous_(t_context) {
  // Resolve before changing anything: a bad environment value throws with the context intact.
  const bool buffers = resolve_include_buffers(include_buffers);
  t_context = InitContext{.device = device, .include_buffers = buffers};
}

InitOnDevice::~InitOnDevice() { t_context = previous_; }

InitEmptyWeights::InitEmptyWeights(std::optional<bool> include_buffers)
    : InitOnDevice(c10::Device(c10::kMeta), include_buffers) {}

at::Tensor place_on(const at::Tensor& tensor, c10::Device device) {
  if (tensor.device() == device) return tensor;
  if (device.is_meta()) return at::empty(tensor.sizes(), tensor.options().device(device));
  return tensor.to(device);
}

}  // namespace ferry::nn
