#pragma once
// The hook interface every module call runs through. Minimal here; the dispatch layer builds
// AlignDevicesHook, SequentialHook and the add/remove lifecycle on top of it.

#include "ferry/nn/tensor_view.h"

namespace ferry::nn {

class Module;

// Callbacks around a module's forward. A module holds at most one hook (compose several with the
// dispatch layer's SequentialHook). Hooks may be shared between threads only if they say so.
class ModelHook {
 public:
  virtual ~ModelHook() = default;

  // Called once when the hook is attached to `module`.
  virtual void init(Module& module) {}
  // Before forward: may replace the call's argument tensors and the module's slot tensors.
  virtual void pre_forward(Module& module, TensorView& args) {}
  // After forward: may replace the output tensors.
  virtual void post_forward(Module& module, TensorView& outputs) {}
  // Called when the hook is removed from `module`.
  virtual void detach(Module& module) {}
  // True: forward runs with autograd disabled.
  virtual bool no_grad() const { return false; }
  // True: calls of modules carrying this hook may be grouped (Note [Grouped calls] in
  // src/nn/linear.cpp): the pre_forward of several modules, then their forwards together, then
  // each post_forward. Only a hook whose pre_forward materializes nothing (it may move the
  // inputs) says yes; the default is no, and a group with such a hook is called one by one.
  virtual bool groupable() const { return false; }
};

}  // namespace ferry::nn
