#include "ferry/dispatch/cpu_offload_hook.h"

#include "ferry/core/devices.h"
#include "ferry/dispatch/align_devices.h"
#include "ferry/dispatch/send.h"

namespace ferry::dispatch {

CpuOffloadHook::CpuOffloadHook(std::optional<ExecutionDevice> execution_device,
                               std::shared_ptr<UserCpuOffloadHook> prev_module_hook)
    : execution_device_(
          execution_device.value_or(gpu_count() > 0 ? ExecutionDevice::gpu(0) : ExecutionDevice::cpu())),
      prev_(std::move(prev_module_hook)) {}

void CpuOffloadHook::init(nn::Module& module) { move_module(module, ExecutionDevice::cpu()); }

void CpuOffloadHook::pre_forward(nn::Module& module, nn::TensorView& args) {
  if (prev_) prev_->offload();
  const auto params = module.named_parameters();
  if (!params.empty() && placement_of(params.front().tensor()) != execution_device_) {
    move_module(module, execution_device_);
  }
  send_to_device(args, execution_device_);
}

std::shared_ptr<UserCpuOffloadHook> cpu_offload_with_hook(
    nn::Module& model, std::optional<ExecutionDevice> execution_device,
    std::shared_ptr<UserCpuOffloadHook> prev_module_hook) {
  auto hook = std::make_shared<CpuOffloadHook>(execution_device, std::move(prev_module_hook));
  add_hook_to_module(model, hook, /*append=*/true);
  return std::make_shared<UserCpuOffloadHook>(model, std::move(hook));
}

}  // namespace ferry::dispatch
