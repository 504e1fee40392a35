#pragma once
// ferry's module tree: ordered named children, parameter and buffer slots, recursive walks with
// full dotted names, and the one entry point through which every call runs the module's hook.

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ferry/nn/hook.h"
#include "ferry/nn/slot.h"

namespace ferry::nn {

class Module;

// A tensor reached by a walk: its full dotted name from the walk's root and its registration.
struct NamedTensor {
  std::string name;    // e.g. "model.layers.0.mlp.up_proj.weight"
  Module* owner;       // the module that registered it
  TensorEntry* entry;  // the registration inside `owner`

  const at::Tensor& tensor() const { return entry->slot->tensor(); }
  const SlotPtr& slot() const { return entry->slot; }
};

struct NamedModule {
  std::string name;  // "" for the root of the walk
  Module* module;
};

struct ModuleWalk {
  // true: a module registered under several names (Sequential(layer, layer), a reused block)
  // appears once, under its first name; false: under every name (PyTorch's remove_duplicate).
  bool remove_duplicate = true;
};

struct ParameterWalk {
  bool recurse = true;  // include descendants' parameters
  // true: a tied parameter, or one of a module registered under several names, appears once,
  // under its first name; false: under every name (modules walked with remove_duplicate=false).
  bool remove_duplicate = true;
};

struct BufferWalk {
  bool recurse = true;           // include descendants' buffers
  bool persistent_only = false;  // skip non-persistent buffers (compared by full name)
  bool remove_duplicate = true;  // as in ParameterWalk
};

struct StateDictOptions {
  // Also list every other name of a tied parameter, and the tensors of a module registered
  // under several names under each of them (as PyTorch does).
  bool keep_tied = false;
};

// Note [Hook entry point]
// A module is called only through Callable<Derived>::operator(), which runs the module's hook
// (pre_forward, then Derived::forward, then post_forward). Layers declare forward private and
// befriend Callable, so no call path bypasses the hook. Hooks see the call's tensors through a
// TensorView; forward keeps its typed C++ signature. The one other entry, Linear::call_group,
// runs the same hooks around several Linears' products (Note [Grouped calls] in linear.cpp).
class Module {
 public:
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module();

  // The class name used by no_split_module_classes ("Linear", "LlamaDecoderLayer", ...).
  const std::string& class_name() const noexcept { return class_name_; }

  // ---- children ----------------------------------------------------------------------------
  // Adds a child; names are unique among this module's children and its tensors, and contain no
  // '.'. Throws InvalidArgument otherwise. Returns the child for convenient member assignment.
  template <class M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> child) {
    add_child(std::move(name), child);
    return child;
  }
  // Direct children in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const noexcept {
    return children_;
  }
  // The direct child `name`, or nullptr.
  Module* child(std::string_view name) const;
  // The descendant at dotted `path` ("" is this module); throws MissingTensor naming the path.
  Module& submodule(std::string_view path);

  // ---- tensors -----------------------------------------------------------------------------
  // Registers a parameter. Inside an InitOnDevice guard it is placed on the guard's device (a
  // meta placement allocates nothing).
  TensorRef register_parameter(std::string name, at::Tensor tensor, bool requires_grad = false);
  // Registers a buffer; placed on the guard's device only when the guard includes buffers.
  TensorRef register_buffer(std::string name, at::Tensor tensor, bool persistent = true);
  // Registers under `name` a slot that already exists (tying this parameter to another).
  TensorRef register_tied_parameter(std::string name, SlotPtr slot);
  // Creates a parameter of `shape` and `dtype` directly on the init guard's device (CPU without
  // a guard) and fills it with `init` unless it is on meta. Layers use this, so building under
  // init_empty_weights allocates no weight storage.
  TensorRef new_parameter(std::string name, at::IntArrayRef shape, at::ScalarType dtype,
                          const std::function<void(at::Tensor&)>& init);
  // Same for a buffer (placed on the guard's device only when it includes buffers).
  TensorRef new_buffer(std::string name, at::IntArrayRef shape, at::ScalarType dtype,
                       const std::function<void(at::Tensor&)>& init, bool persistent = true);

  // This module's own registrations, in registration order.
  const std::vector<std::unique_ptr<TensorEntry>>& tensors() const noexcept { return tensors_; }
  // The registration of direct tensor `name`, or nullptr.
  TensorEntry* find_entry(std::string_view name) const;

  // ---- walks (pre-order, children in registration order) -----------------------------------
  // Every walk throws InvalidArgument for a module that is its own descendant (Note [Module
  // cycles] in module.cpp).
  std::vector<NamedTensor> named_parameters(ParameterWalk walk = {});
  std::vector<NamedTensor> named_buffers(BufferWalk walk = {});
  // The root first as ""; by default every module once (shared submodules under their first
  // name), with remove_duplicate=false under every name.
  std::vector<NamedModule> named_modules(ModuleWalk walk = {});
  // Accelerate's named_module_tensors: all parameters (deduplicated) then all buffers, optionally
  // without non-persistent ones (compared by full name; see docs/deviations.md).
  std::vector<NamedTensor> named_module_tensors(bool include_buffers = true, bool recurse = true,
                                                bool remove_non_persistent = false);
  // Parameters and persistent buffers, module by module in PyTorch's state_dict order.
  std::vector<std::pair<std::string, at::Tensor>> state_dict(StateDictOptions options = {});

  // The tensor at dotted `path` ("layers.0.weight"); throws MissingTensor naming it.
  NamedTensor find_tensor(std::string_view path);
  // Replaces the tensor in the slot at dotted `path`; same shape, any device or dtype.
  void set_tensor(std::string_view path, at::Tensor tensor);
  // Points the registration at dotted `path` to `slot` (used to tie and retie parameters).
  void set_slot(std::string_view path, SlotPtr slot);

  // ---- hook --------------------------------------------------------------------------------
  const std::shared_ptr<ModelHook>& hook() const noexcept { return hook_; }
  // Sets (or with nullptr clears) the hook without running its init/detach callbacks; the
  // dispatch layer's add_hook_to_module / remove_hook_from_module implement the lifecycle.
  void set_hook(std::shared_ptr<ModelHook> hook) noexcept { hook_ = std::move(hook); }

 protected:
  explicit Module(std::string class_name);

 private:
  void add_child(std::string name, std::shared_ptr<Module> child);
  void check_new_name(const std::string& name) const;
  TensorRef add_entry(std::string name, at::Tensor tensor, TensorKind kind, bool persistent,
                      bool requires_grad);

  std::string class_name_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::unordered_map<std::string, std::size_t> child_index_;
  std::vector<std::unique_ptr<TensorEntry>> tensors_;
  std::shared_ptr<ModelHook> hook_;
};

// Base of every callable module: gives Derived a typed call operator that runs the hook around
// Derived::forward (Note [Hook entry point]). Arguments are taken by value (tensors are cheap
// handles), so a hook that moves an input never changes the caller's variable.
template <class Derived>
class Callable : public Module {
 public:
  template <class... Args>
  auto operator()(Args... args) {
    Derived& self = static_cast<Derived&>(*this);
    std::shared_ptr<ModelHook> hook = this->hook();  // kept alive for the whole call
    if (!hook) return self.forward(std::move(args)...);
    TensorView inputs;
    (inputs.visit(args), ...);
    hook->pre_forward(*this, inputs);
    auto output = [&] {
      if (hook->no_grad()) {
        at::NoGradGuard no_grad;
        return self.forward(std::move(args)...);
      }
      return self.forward(std::move(args)...);
    }();
    TensorView outputs;
    outputs.visit(output);
    hook->post_forward(*this, outputs);
    return output;
  }

 protected:
  using Module::Module;
};

}  // namespace ferry::nn
