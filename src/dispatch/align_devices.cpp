#include "ferry/dispatch/align_devices.h"

#include <fmt/format.h>

#include <algorithm>

#include "ferry/core/devices.h"
#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/dispatch/send.h"

namespace ferry::dispatch {
namespace {

at::Tensor meta_like(const at::Tensor& t) {
  return at::empty(t.sizes(), t.options().device(c10::kMeta));
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string placement_text(const std::optional<ExecutionDevice>& p) {
  return p ? p->to_string() : "None";
}

}  // namespace

// Note [Tied weights across placements]
// Tied parameters are one slot. When two modules that share it are offloaded, the first hook to
// run materializes the slot on its execution device; a hook that finds the slot already
// materialized there uses it as is and leaves returning it to meta to the hook that loaded it.
// So a tied weight is onloaded once per execution device and call, never duplicated.

AlignDevicesHook::AlignDevicesHook(AlignDevicesOptions options) : options_(std::move(options)) {}

std::vector<nn::NamedTensor> AlignDevicesHook::managed(nn::Module& module) const {
  return module.named_module_tensors(options_.offload_buffers, options_.place_submodules,
                                     /*remove_non_persistent=*/true);
}

void AlignDevicesHook::init(nn::Module& module) {
  const bool recurse = options_.place_submodules;
  if (!options_.offload && options_.execution_device) {
    for (const auto& t : module.named_module_tensors(true, recurse, false)) {
      if (!t.tensor().is_meta()) {
        t.entry->slot->assign(move_to(t.tensor(), *options_.execution_device), t.name);
      }
    }
    return;
  }
  if (!options_.offload) return;
  original_placements_.clear();
  for (const auto& t : module.named_module_tensors(true, recurse, false)) {
    original_placements_.emplace_back(t.name, placement_of(t.tensor()));
  }
  if (!options_.weights_map) {
    std::map<std::string, at::Tensor> state;
    for (const auto& t : module.named_module_tensors(options_.offload_buffers, recurse, false)) {
      if (!t.tensor().is_meta()) state.emplace(t.name, move_to(t.tensor(), ExecutionDevice::cpu()));
    }
    options_.weights_map = io::make_memory_source(std::move(state));
  }
  for (const auto& t : managed(module)) {
    // A missing weight is found now, when dispatching, not at the first forward.
    FERRY_CHECK(options_.weights_map->contains(t.name), MissingTensor,
                "tensor '{}' of offloaded module {} is not in its weights map ({})", t.name,
                module.class_name(), options_.weights_map->description());
    t.entry->slot->assign(meta_like(t.tensor()), t.name);
  }
  if (options_.execution_device) {
    for (const auto& b : module.named_buffers({.recurse = recurse})) {
      const bool keep_on_device = !options_.offload_buffers || !b.entry->persistent;
      if (keep_on_device && !b.tensor().is_meta()) {
        b.entry->slot->assign(move_to(b.tensor(), *options_.execution_device), b.name);
      }
    }
  }
}

// Note [Compute where the weights rest]
// Accelerate always brings an offloaded block's weights to the main GPU. For a block resting in
// CPU RAM and a call with few rows (decoding one token), running it on the CPU reads the weights
// once from DRAM and moves only the activations, instead of pushing every weight over the link.
// The hooks of such a block know where its weights rest and switch per call, by the rows of the
// call's first input; every hook of the block sees the same rows, so the block's modules agree.

namespace {
std::int64_t rows_of(const nn::TensorView& args) {
  for (const auto& f : args.fields()) {
    const at::Tensor& t = *f.tensor;
    if (t.dim() >= 1 && t.size(-1) > 0) return t.numel() / t.size(-1);
  }
  return 0;
}
}  // namespace

void AlignDevicesHook::pre_forward(nn::Module& module, nn::TensorView& args) {
  if (options_.io_same_device) input_device_ = find_device(args);
  const bool at_rest = options_.rest_device && rows_of(args) <= options_.rest_max_rows;
  const std::optional<ExecutionDevice> exec = at_rest ? options_.rest_device : options_.execution_device;
  if (options_.offload && exec) {
    offload_now();  // a previous call that threw left its tensors materialized
    // At rest, the weights are used where the weights map holds them; without a prefetcher,
    // they are loaded from it per call (Accelerate's way).
    if (options_.prefetcher && !at_rest) {
      onload_through_prefetcher(module);
    } else {
      for (const auto& t : managed(module)) {
        const nn::SlotPtr& slot = t.slot();
        if (!slot->tensor().is_meta()) continue;  // Note [Tied weights across placements]
        FERRY_CHECK(options_.weights_map->contains(t.name), MissingTensor,
                    "tensor '{}' of offloaded module {} is not in its weights map ({})", t.name,
                    module.class_name(), options_.weights_map->description());
        // The stored value follows the model's dtype (the meta placeholder's), as Accelerate's
        // set_module_tensor_to_device does.
        io::LoadOptions load{.dtype = from_scalar_type(slot->tensor().scalar_type())};
        slot->assign(move_to(options_.weights_map->load(t.name, load), *exec), t.name);
        onloaded_.push_back(slot);
      }
    }
  }
  if (exec) send_to_device(args, *exec, options_.skip_keys);
}

void AlignDevicesHook::onload_through_prefetcher(nn::Module& module) {
  const std::vector<nn::NamedTensor> tensors = managed(module);
  if (tensors.empty()) return;  // nothing to load (e.g. a root whose only tensors are buffers)
  if (!block_) {
    std::vector<BlockTensor> specs;
    for (const auto& t : tensors) {
      FERRY_CHECK(options_.weights_map->contains(t.name), MissingTensor,
                  "tensor '{}' of offloaded module {} is not in its weights map ({})", t.name,
                  module.class_name(), options_.weights_map->description());
      specs.push_back({.name = t.name,
                       .source = options_.weights_map,
                       .dtype = from_scalar_type(t.tensor().scalar_type())});
    }
    const std::string path = options_.name.empty() ? module.class_name() : options_.name;
    const auto& on_demand = options_.prefetcher->options().on_demand_classes;
    block_ = options_.prefetcher->add_block(
        path, options_.unit, *options_.execution_device, std::move(specs),
        std::find(on_demand.begin(), on_demand.end(), module.class_name()) != on_demand.end());
  }
  std::vector<at::Tensor> values = options_.prefetcher->take(*block_);
  running_ = true;
  FERRY_ASSERT(values.size() == tensors.size(), "block of {} returned {} tensors for {}",
               options_.name, values.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const nn::SlotPtr& slot = tensors[i].slot();
    if (!slot->tensor().is_meta()) continue;  // Note [Tied weights across placements]
    slot->assign(std::move(values[i]), tensors[i].name);
    onloaded_.push_back(slot);
  }
}

void AlignDevicesHook::offload_now() {
  for (const nn::SlotPtr& slot : onloaded_) slot->assign(meta_like(slot->tensor()), "");
  onloaded_.clear();
  if (running_) {
    running_ = false;
    options_.prefetcher->release(*block_);
  }
}

void AlignDevicesHook::post_forward(nn::Module& /*module*/, nn::TensorView& outputs) {
  offload_now();
  if (options_.io_same_device && input_device_) {
    send_to_device(outputs, *input_device_, options_.skip_keys);
  }
}

void AlignDevicesHook::detach(nn::Module& module) {
  if (!options_.offload) return;
  for (const auto& [name, placement] : original_placements_) {
    if (!placement) continue;  // was on meta before the hook
    nn::NamedTensor t = module.find_tensor(name);
    at::Tensor value = options_.weights_map && options_.weights_map->contains(name)
                           ? options_.weights_map->load(name)
                           : t.tensor();
    if (value.is_meta()) continue;
    t.entry->slot->assign(move_to(value.to(t.tensor().scalar_type()), *placement), name);
  }
}

std::string AlignDevicesHook::describe() const {
  return fmt::format(
      "AlignDevicesHook(execution_device={}, offload={}, io_same_device={}, offload_buffers={}, "
      "place_submodules={}, skip_keys=[{}])",
      placement_text(options_.execution_device), options_.offload, options_.io_same_device,
      options_.offload_buffers, options_.place_submodules, fmt::join(options_.skip_keys, ", "));
}

namespace {
void attach_recursive(nn::Module& module, ExecutionDevice execution_device, bool offload,
                      const AttachOptions& options, const std::string& module_name,
                      const std::string& unit) {
  const bool has_direct = !module.tensors().empty();
  const bool full_offload =
      offload && contains(options.preload_module_classes, module.class_name());
  if (has_direct || full_offload) {
    WeightsMap prefixed;
    if (options.weights_map) {
      prefixed = module_name.empty() ? options.weights_map
                                     : options.weights_map->prefixed(module_name + ".");
    }
    add_hook_to_module(module,
                       std::make_shared<AlignDevicesHook>(
                           AlignDevicesOptions{.execution_device = execution_device,
                                               .offload = offload,
                                               .weights_map = std::move(prefixed),
                                               .offload_buffers = options.offload_buffers,
                                               .place_submodules = full_offload,
                                               .skip_keys = options.skip_keys,
                                               .prefetcher = offload ? options.prefetcher : nullptr,
                                               .name = module_name,
                                               .unit = unit}),
                       /*append=*/true);
  }
  if (full_offload) return;
  for (const auto& [name, child] : module.children()) {
    attach_recursive(*child, execution_device, offload, options,
                     module_name.empty() ? name : module_name + "." + name, unit);
  }
}
}  // namespace

void attach_align_device_hook(nn::Module& module, ExecutionDevice execution_device, bool offload,
                              const AttachOptions& options, const std::string& module_name) {
  if (!offload || options.weights_map) {
    attach_recursive(module, execution_device, offload, options, module_name, module_name);
    return;
  }
  // One weights map for the whole tree, every name of a tied parameter included, so a module
  // whose tied weight another hook already sent to meta still finds it.
  AttachOptions with_map = options;
  std::map<std::string, at::Tensor> state;
  for (auto& [name, t] : module.state_dict({.keep_tied = true})) {
    if (!t.is_meta())
      state.emplace(module_name.empty() ? name : module_name + "." + name,
                    move_to(t, ExecutionDevice::cpu()));
  }
  with_map.weights_map = io::make_memory_source(std::move(state));
  attach_recursive(module, execution_device, offload, with_map, module_name, module_name);
}

void attach_execution_device_hook(nn::Module& module, ExecutionDevice execution_device,
                                  const AttachOptions& options) {
  if (!module.hook() && !module.state_dict().empty()) {
    add_hook_to_module(module,
                       std::make_shared<AlignDevicesHook>(AlignDevicesOptions{
                           .execution_device = execution_device, .skip_keys = options.skip_keys}));
  }
  if (contains(options.preload_module_classes, module.class_name())) return;
  for (const auto& [name, child] : module.children()) {
    attach_execution_device_hook(*child, execution_device, options);
  }
}

void attach_align_device_hook_on_blocks(nn::Module& module,
                                        const std::map<std::string, ExecutionDevice>& execution_device,
                                        const std::map<std::string, bool>& offload,
                                        const AttachOptions& options,
                                        const std::string& module_name) {
  const auto exec = execution_device.find(module_name);
  const auto off = offload.find(module_name);
  // A module is a block only when the map names it (it is in `offload`). The root's execution
  // device alone ("" → main device, as dispatch_model adds it) makes no block: were the root
  // given place_submodules, its init would copy every resident weight of the whole model to
  // the main device before the blocks' own hooks are attached (issue 11's overshoot).
  if (exec != execution_device.end() && off != offload.end()) {
    const bool offloaded = off->second;
    if (!offloaded) {
      add_hook_to_module(module, std::make_shared<AlignDevicesHook>(
                                     AlignDevicesOptions{.execution_device = exec->second,
                                                         .io_same_device = module_name.empty(),
                                                         .offload_buffers = options.offload_buffers,
                                                         .place_submodules = true,
                                                         .skip_keys = options.skip_keys}));
      attach_execution_device_hook(module, exec->second, options);
    } else {
      attach_align_device_hook(module, exec->second, /*offload=*/true, options, module_name);
      if (!module.hook()) {
        add_hook_to_module(module, std::make_shared<AlignDevicesHook>(
                                       AlignDevicesOptions{.execution_device = exec->second,
                                                           .io_same_device = module_name.empty(),
                                                           .skip_keys = options.skip_keys}));
      }
      attach_execution_device_hook(module, exec->second, options);
    }
  } else if (module_name.empty()) {
    const auto root = execution_device.find("");
    add_hook_to_module(
        module, std::make_shared<AlignDevicesHook>(AlignDevicesOptions{
                    .execution_device =
                        root == execution_device.end() ? std::nullopt : std::optional(root->second),
                    .io_same_device = true,
                    .skip_keys = options.skip_keys}));
  }
  for (const auto& [name, child] : module.children()) {
    attach_align_device_hook_on_blocks(*child, execution_device, offload, options,
                                       module_name.empty() ? name : module_name + "." + name);
  }
}

void move_module(nn::Module& module, ExecutionDevice device) {
  for (const auto& t : module.named_module_tensors(/*include_buffers=*/true, /*recurse=*/true)) {
    if (!t.tensor().is_meta()) t.entry->slot->assign(move_to(t.tensor(), device), t.name);
  }
}

}  // namespace ferry::dispatch
