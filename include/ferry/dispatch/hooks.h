#pragma once
// The hook lifecycle of Accelerate's hooks.py on ferry's module tree: attaching (replacing or
// appending), composing in insertion order, and removing hooks (spec §2.15).

#include <memory>
#include <vector>

#include "ferry/nn/hook.h"
#include "ferry/nn/module.h"

namespace ferry::dispatch {

using nn::ModelHook;

// Runs several hooks as one, each callback in insertion order (post_forward is not reversed).
// no_grad() is true when any of them asks for it.
class SequentialHook final : public ModelHook {
 public:
  explicit SequentialHook(std::vector<std::shared_ptr<ModelHook>> hooks);
  const std::vector<std::shared_ptr<ModelHook>>& hooks() const noexcept { return hooks_; }

  void init(nn::Module& module) override;
  void pre_forward(nn::Module& module, nn::TensorView& args) override;
  void post_forward(nn::Module& module, nn::TensorView& outputs) override;
  void detach(nn::Module& module) override;
  bool no_grad() const override;
  bool groupable() const override;  // when every one of them is

 private:
  std::vector<std::shared_ptr<ModelHook>> hooks_;
};

// Attaches `hook` to `module` and runs its init. Without append an existing hook is replaced
// (its detach is NOT called, as in Accelerate). With append and an existing hook, the old hook
// is detached, then SequentialHook(old, new) is attached and initialised (so the old hook's
// init runs again).
void add_hook_to_module(nn::Module& module, std::shared_ptr<ModelHook> hook, bool append = false);

// Runs the hook's detach and removes it; with recurse, the same for every descendant.
void remove_hook_from_module(nn::Module& module, bool recurse = false);
inline void remove_hook_from_submodules(nn::Module& module) {
  remove_hook_from_module(module, /*recurse=*/true);
}

// The hooks of type H attached to `module`, directly or inside a SequentialHook.
template <class H>
std::vector<H*> find_hooks(const nn::Module& module) {
  std::vector<H*> out;
  ModelHook* hook = module.hook().get();
  if (auto* h = dynamic_cast<H*>(hook)) out.push_back(h);
  if (auto* seq = dynamic_cast<SequentialHook*>(hook)) {
    for (const auto& inner : seq->hooks()) {
      if (auto* h = dynamic_cast<H*>(inner.get())) out.push_back(h);
    }
  }
  return out;
}

}  // namespace ferry::dispatch
