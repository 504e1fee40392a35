#include "ferry/dispatch/hooks.h"

namespace ferry::dispatch {

SequentialHook::SequentialHook(std::vector<std::shared_ptr<ModelHook>> hooks)
    : hooks_(std::move(hooks)) {}

void SequentialHook::init(nn::Module& module) {
  for (const auto& h : hooks_) h->init(module);
}

void SequentialHook::pre_forward(nn::Module& module, nn::TensorView& args) {
  for (const auto& h : hooks_) h->pre_forward(module, args);
}

void SequentialHook::post_forward(nn::Module& module, nn::TensorView& outputs) {
  for (const auto& h : hooks_) h->post_forward(module, outputs);
}

void SequentialHook::detach(nn::Module& module) {
  for (const auto& h : hooks_) h->detach(module);
}

bool SequentialHook::no_grad() const {
  for (const auto& h : hooks_) {
    if (h->no_grad()) return true;
  }
  return false;
}

bool SequentialHook::groupable() const {
  for (const auto& h : hooks_) {
    if (!h->groupable()) return false;
  }
  return true;
}

void add_hook_to_module(nn::Module& module, std::shared_ptr<ModelHook> hook, bool append) {
  if (append && module.hook()) {
    std::shared_ptr<ModelHook> old = module.hook();
    remove_hook_from_module(module);
    hook = std::make_shared<SequentialHook>(
        std::vector<std::shared_ptr<ModelHook>>{std::move(old), std::move(hook)});
  }
  hook->init(module);
  module.set_hook(std::move(hook));
}

void remove_hook_from_module(nn::Module& module, bool recurse) {
  if (std::shared_ptr<ModelHook> hook = module.hook()) {
    hook->detach(module);
    module.set_hook(nullptr);
  }
  if (recurse) {
    for (const auto& [name, child] : module.children()) remove_hook_from_module(*child, true);
  }
}

}  // namespace ferry::dispatch
