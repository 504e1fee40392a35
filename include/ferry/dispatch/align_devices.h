#pragma once
// AlignDevicesHook (Accelerate's hook of the same name): runs a module on its execution device.
// Inputs are moved there; an offloaded module's own tensors rest on meta and are materialized
// from a weights map just before forward and returned to meta just after. Plus the functions
// that attach such hooks over a tree.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/execution_device.h"
#include "ferry/dispatch/hooks.h"
#include "ferry/io/tensor_source.h"

namespace ferry::dispatch {

class Prefetcher;

using WeightsMap = std::shared_ptr<const io::TensorSource>;

struct AlignDevicesOptions {
  std::optional<ExecutionDevice> execution_device;  // where forward runs; nullopt: inputs stay put
  bool offload = false;           // tensors rest on meta and are loaded from weights_map per call
  bool io_same_device = false;    // outputs go back to where the first input was
  WeightsMap weights_map;         // names relative to the module; built from it when absent
  bool offload_buffers = false;   // offload persistent buffers too (else they live on the device)
  bool place_submodules = false;  // manage the tensors of the whole subtree, not only its own
  std::vector<std::string> skip_keys;  // struct fields of inputs/outputs never moved
  // Offloaded tensors come through this prefetcher (ferry/dispatch/prefetch.h) instead of being
  // loaded from the weights map on each call; `name` and `unit` name the block it registers.
  std::shared_ptr<Prefetcher> prefetcher;
  std::string name;  // the module's path, for messages
  std::string unit;  // the device-map entry the module belongs to ("": the module itself)
  // Compute where the weights rest (Note [Compute where the weights rest]): a call whose first
  // input has at most `rest_max_rows` rows (elements / last dimension: batch x tokens) runs on
  // `rest_device` with the weights as the weights map holds them; only activations move.
  std::optional<ExecutionDevice> rest_device;
  std::int64_t rest_max_rows = 0;
};

class AlignDevicesHook final : public ModelHook {
 public:
  explicit AlignDevicesHook(AlignDevicesOptions options);
  const AlignDevicesOptions& options() const noexcept { return options_; }
  // Sets rest_device and rest_max_rows (dispatch_model does, for blocks resting on the CPU).
  void compute_at_rest(std::optional<ExecutionDevice> device, std::int64_t max_rows) {
    options_.rest_device = device;
    options_.rest_max_rows = max_rows;
  }

  void init(nn::Module& module) override;
  void pre_forward(nn::Module& module, nn::TensorView& args) override;
  void post_forward(nn::Module& module, nn::TensorView& outputs) override;
  void detach(nn::Module& module) override;
  // Without offload, pre_forward only moves the inputs: calls may be grouped (Note [Grouped
  // calls] in src/nn/linear.cpp).
  bool groupable() const override { return !options_.offload; }

  // "AlignDevicesHook(execution_device=0, offload=true, io_same_device=false, ...)".
  std::string describe() const;

 private:
  // The tensors this hook materializes: params (+ persistent buffers with offload_buffers).
  std::vector<nn::NamedTensor> managed(nn::Module& module) const;

  AlignDevicesOptions options_;
  std::vector<std::pair<std::string, std::optional<ExecutionDevice>>> original_placements_;
  std::optional<ExecutionDevice> input_device_;
  // Slots this call materialized (a slot already materialized — tied with a module running
  // now — is left to the hook that materialized it: Note [Tied weights across placements]).
  std::vector<nn::SlotPtr> onloaded_;
  std::optional<std::size_t> block_;  // registration with options_.prefetcher
  bool running_ = false;              // the prefetcher's block is taken and not yet released

  void onload_through_prefetcher(nn::Module& module);
  void offload_now();
};

struct AttachOptions {
  WeightsMap weights_map;  // names relative to the module attached to
  bool offload_buffers = false;
  std::vector<std::string> skip_keys;
  std::vector<std::string> preload_module_classes;  // load the whole subtree at their forward
  std::shared_ptr<Prefetcher> prefetcher;           // offloaded blocks stream through it
};

// Appends an AlignDevicesHook to every module of the tree that has tensors of its own (weights
// map prefixed with its path); a module of a preload class gets place_submodules and ends the
// recursion. `module_name` is the path of `module` in the weights map.
void attach_align_device_hook(nn::Module& module, ExecutionDevice execution_device, bool offload,
                              const AttachOptions& options, const std::string& module_name = "");

// Adds AlignDevicesHook(execution_device) to `module` and every descendant that has no hook and a
// non-empty state dict; stops below modules of preload classes.
void attach_execution_device_hook(nn::Module& module, ExecutionDevice execution_device,
                                  const AttachOptions& options);

// Per device-map key (Accelerate's attach_align_device_hook_on_blocks, dictionary form):
// execution device and offload flag per module path; "" is the root.
void attach_align_device_hook_on_blocks(nn::Module& module,
                                        const std::map<std::string, ExecutionDevice>& execution_device,
                                        const std::map<std::string, bool>& offload,
                                        const AttachOptions& options,
                                        const std::string& module_name = "");

// Every tensor of the tree (parameters once, all buffers) moved to `device`.
void move_module(nn::Module& module, ExecutionDevice device);

}  // namespace ferry::dispatch
