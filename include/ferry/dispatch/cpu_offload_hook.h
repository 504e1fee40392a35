#pragma once
// Whole-model offload between calls (Accelerate's cpu_offload_with_hook): a model lives on the
// CPU, moves to the execution device at its first forward and stays there until the next model
// of a pipeline runs (or until offload()).

#include <memory>
#include <optional>
#include <utility>

#include "ferry/core/execution_device.h"
#include "ferry/dispatch/hooks.h"

namespace ferry::dispatch {

class UserCpuOffloadHook;

class CpuOffloadHook final : public ModelHook {
 public:
  // `execution_device` defaults to GPU 0 when a GPU exists, else the CPU.
  CpuOffloadHook(std::optional<ExecutionDevice> execution_device,
                 std::shared_ptr<UserCpuOffloadHook> prev_module_hook);
  void init(nn::Module& module) override;  // moves the whole model to the CPU
  void pre_forward(nn::Module& module, nn::TensorView& args) override;
  ExecutionDevice execution_device() const noexcept { return execution_device_; }

 private:
  ExecutionDevice execution_device_;
  std::shared_ptr<UserCpuOffloadHook> prev_;
};

// The handle cpu_offload_with_hook returns: offload() sends the model back to the CPU, remove()
// detaches the hook. The model must outlive the handle's use.
class UserCpuOffloadHook {
 public:
  UserCpuOffloadHook(nn::Module& model, std::shared_ptr<CpuOffloadHook> hook)
      : model_(&model), hook_(std::move(hook)) {}
  void offload() { hook_->init(*model_); }
  void remove() { remove_hook_from_module(*model_); }

 private:
  nn::Module* model_;
  std::shared_ptr<CpuOffloadHook> hook_;
};

// Appends a CpuOffloadHook to `model` (moving it to the CPU now). Running the model offloads the
// model of `prev_module_hook` first, so a pipeline of models keeps one on the device at a time.
std::shared_ptr<UserCpuOffloadHook> cpu_offload_with_hook(
    nn::Module& model, std::optional<ExecutionDevice> execution_device = std::nullopt,
    std::shared_ptr<UserCpuOffloadHook> prev_module_hook = nullptr);

}  // namespace ferry::dispatch
